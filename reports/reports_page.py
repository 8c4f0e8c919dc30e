"""The Reports page: a card per report of the catalogue, with a preview of its top rows, and
the download dialog's choices.

Subscription admins see it in the admin (``admin_views``), project managers and members on
the usage pages (``views``); both read what is here. A preview is the report's own rows
(``Report.rows``, as the API reads them), so the page and the file never disagree; the
dialog's filters offer only the values the filter would accept from this person
(``filters.FILTERS``, through ``visible_to``). The download itself is the report API's
answer (``views.report_download``).
"""

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from django.db.models import F
from django.utils import timezone

from accounts.models import Subscription
from core.display import format_credits
from core.money import CREDIT_PLACES
from credits.periods import local_date, month_start, previous_month_start

from .catalogue import REPORTS, Column, Report
from .costs import with_administered
from .filters import FILTERS
from .selectors import report_totals
from .timeframes import TIMEFRAMES, InvalidTimeframe, Timeframe, named_timeframe
from .usage import report_accounts

PREVIEW_ROWS = 5
PAST_PERIODS = 12  # billing periods offered besides the current one
DEFAULT_TIMEFRAME = "this_month"


def timeframe_label(name: str) -> str:
    """``last_7_days`` reads "Last 7 days"."""
    return name.replace("_", " ").capitalize()


@dataclass(frozen=True)
class FilterField:
    name: str
    label: str
    choices: list[tuple[str, str]]


@dataclass(frozen=True)
class Card:
    report: Report
    locked: str  # why this person may not read it here ("" when they may)
    columns: list[tuple[str, bool]] = field(default_factory=list)  # name, numeric
    preview: list[list[tuple[str, bool]]] = field(default_factory=list)  # top rows: text, numeric
    count: int = 0
    total: Decimal | None = None
    filters: list[FilterField] = field(default_factory=list)
    sub_account_toggle: bool = False  # the dialog offers "Include sub-accounts"


@dataclass(frozen=True)
class ReportsPage:
    subscription: Subscription
    timeframe: Timeframe
    include_sub_accounts: bool
    offers_sub_accounts: bool
    cards: list[Card]
    timeframes: list[tuple[str, str]]
    periods: list[tuple[str, str]]  # YYYY-MM, label; the current one first
    today: date
    preview_rows: int = PREVIEW_ROWS


def readable_subscriptions(user, *, administered_only: bool = False) -> list[Subscription]:
    """The subscriptions ``user`` reads reports of (or only those they administer, for the
    admin's page), top-level ones first, each with ``administered`` (as
    ``selectors.report_subscription`` gives them)."""
    manager = Subscription.objects
    found = manager.administered_by(user) if administered_only else manager.visible_to(user)
    found = with_administered(found, user)
    return list(found.order_by(F("parent_id").asc(nulls_first=True), "name", "pk"))


def chosen_timeframe(subscription: Subscription, name: str | None, now=None) -> Timeframe:
    """The preview's named timeframe; anything else is the default one."""
    now = now or timezone.now()
    try:
        return named_timeframe(name=name or DEFAULT_TIMEFRAME, zone=subscription.zone, now=now)
    except InvalidTimeframe:
        return named_timeframe(name=DEFAULT_TIMEFRAME, zone=subscription.zone, now=now)


def reports_page(
    *, user, subscription: Subscription, timeframe: Timeframe, include_sub_accounts: bool
) -> ReportsPage:
    """Every report ``user`` may read on ``subscription`` (from ``report_subscription``),
    previewed over ``timeframe``: admins-only reports only for its admins, per-member
    reports locked with the plan's explanation where the plan has no team views."""
    accounts = report_accounts(user, subscription, include_sub_accounts=True)
    offers_sub_accounts = bool(subscription.administered) and len(accounts) > 1
    include_sub_accounts = include_sub_accounts and offers_sub_accounts
    if not include_sub_accounts:
        accounts = accounts[:1]
    choices = _filter_choices(user, accounts)
    cards = []
    for report in REPORTS:
        refusal = report.refusal(subscription)
        if refusal is not None and refusal.code != "plan_required":
            continue  # a report for another role: not offered at all
        if refusal is not None:
            cards.append(Card(report=report, locked=refusal.message))
            continue
        cards.append(
            _card(
                report,
                user=user,
                subscription=subscription,
                timeframe=timeframe,
                include_sub_accounts=include_sub_accounts,
                choices=choices,
                toggle=offers_sub_accounts and report.sub_account_toggle,
            )
        )
    today = local_date(timezone.now(), subscription.zone)
    return ReportsPage(
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=include_sub_accounts,
        offers_sub_accounts=offers_sub_accounts,
        cards=cards,
        timeframes=[(name, timeframe_label(name)) for name in TIMEFRAMES],
        periods=_periods(today),
        today=today,
    )


def _card(report: Report, *, user, subscription, timeframe, include_sub_accounts, choices, toggle):
    rows = report.rows(
        user=user,
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=include_sub_accounts,
    )
    totals = report_totals(rows=rows, row_class=report.row_type)
    columns = [column for column in report.columns if column.name in report.preview_columns]
    return Card(
        report=report,
        locked="",
        columns=[(column.name, not column.is_text) for column in columns],
        preview=[
            [(_shown(column, getattr(row, column.name)), not column.is_text) for column in columns]
            for row in rows[:PREVIEW_ROWS]
        ],
        count=len(rows),
        total=totals.get("credits_consumed"),
        filters=[
            FilterField(spec.name, FILTERS[spec.name].label, choices[spec.name])
            for spec in report.filters
        ],
        sub_account_toggle=toggle,
    )


def _shown(column: Column, value) -> str:
    """A preview cell: credits as every page writes them, anything else as the file does."""
    if column.places == CREDIT_PLACES:
        return format_credits(value)
    cell = column.cell(value)
    return "" if cell is None else str(cell)


def _filter_choices(user, accounts: list[Subscription]) -> dict[str, list[tuple[str, str]]]:
    """The values each filter accepts from ``user`` on ``accounts``: one query a filter."""
    whole_subscriptions = all(account.administered for account in accounts)
    found = {}
    for name, usage_filter in FILTERS.items():
        rows = usage_filter.choices(user, accounts, whole_subscriptions)
        value, label = usage_filter.value, usage_filter.shown
        pairs = rows.order_by(label, value).values_list(value, label).distinct()
        found[name] = [(str(value), str(label)) for value, label in pairs if value]
    return found


def _periods(today: date) -> list[tuple[str, str]]:
    months = [month_start(today)]
    for _ in range(PAST_PERIODS):
        months.append(previous_month_start(months[-1]))
    return [(f"{month:%Y-%m}", f"{month:%B %Y}") for month in months]
