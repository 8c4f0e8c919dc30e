"""Monthly statements: what a subscription owes for a closed billing period, line by line.

A period closes when its grace window for late events ends (``LATE_EVENT_GRACE_HOURS`` after
the period). Its statement is read from the ledger, with one rule that makes it immutable from
then on: it holds the period's ledger rows recorded until it closed, and the rows of earlier
periods recorded after the previous period closed and until this one did (late corrections,
on one line). Every row lands in exactly one statement, and no row recorded later can enter a
closed one (``recorded_at`` is set when a row is inserted, never backdated; prices cannot be
backdated and grants cannot be added to a closed period). Nothing is stored, so raising
``LATE_EVENT_GRACE_HOURS`` later moves the boundaries of statements already closed.

Lines: the base allocation (for information); base credits x the credit price and excess
credits x the excess price, one line per price in effect during the period (a mid-period
change gives two lines); each grant bought in the period (its price); the credits drawn from
grants and the credits lapsed at expiry (for information: a grant is paid when bought); late
corrections (their ledger cost); at a parent, each sub-account's total. Each priced line is
rounded once to the currency's minor unit, half to even; the total is the sum of the lines.

Everything a statement reads for a list of (account, month) pairs takes a fixed number of
queries, so a parent with many sub-accounts costs the same few round trips.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, IntegerField, Q, Sum, Value, When
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.http import urlencode

from accounts.models import Subscription
from core.display import format_credits
from core.errors import DomainError
from core.money import line_amount, round_money
from credits import webhooks
from credits.models import (
    BillingPeriod,
    CreditEvent,
    CreditGrant,
    GrantAdjustment,
    PlanPrice,
    SubscriptionPrice,
)
from credits.periods import (
    PLACEABLE_YEARS,
    is_placeable_day,
    local_date,
    month_bounds,
)

from .exports import CsvTable, csv_filename
from .models import StatementClosure

ZERO = Decimal(0)
# How far back a late beat still announces a closed statement; older closings stay quiet.
ANNOUNCE_WITHIN = timedelta(days=7)
ANNOUNCE_CHUNK = 500
MONTHS_LISTED = 36  # on the admin page


class InvalidMonth(DomainError):
    code = "invalid_month"
    message = f"Give the month as YYYY-MM, from the years {PLACEABLE_YEARS}."


class StatementNotFound(DomainError):
    code = "statement_not_found"
    message = "The subscription has no billing period in that month."


class PeriodNotClosed(DomainError):
    code = "period_not_closed"
    message = "The period is still open (or in its grace window for late events)."


def grace() -> timedelta:
    return timedelta(hours=settings.LATE_EVENT_GRACE_HOURS)


def parse_month(text: str) -> date:
    """``2026-11`` -> 1 November 2026; anything else (or a month no period can hold) is an
    ``InvalidMonth``."""
    year, dash, month = text.partition("-")
    if not (dash and len(year) == 4 and len(month) == 2 and year.isdigit() and month.isdigit()):
        raise InvalidMonth(month=text)
    try:
        first = date(int(year), int(month), 1)
    except ValueError:
        raise InvalidMonth(month=text) from None
    if not is_placeable_day(first):
        raise InvalidMonth(month=text)
    return first


# --- The statement ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    kind: str
    description: str
    credits: Decimal | None = None
    unit_price: Decimal | None = None  # per credit
    amount: Decimal | None = None  # rounded once; None: not priced (information, or no price)
    starts: datetime | None = None  # the price's interval, for priced usage lines
    ends: datetime | None = None


@dataclass
class Statement:
    subscription: Subscription
    month: date  # the local first day
    start: datetime
    end: datetime
    closes_at: datetime
    closed: bool
    currency: str | None
    lines: list[Line] = field(default_factory=list)

    @property
    def total(self) -> Decimal | None:
        """The sum of the priced lines; None when nothing is priced (no price in effect)."""
        amounts = [line.amount for line in self.lines if line.amount is not None]
        if self.currency is None:
            return None
        return sum(amounts, round_money(ZERO, self.currency))

    @property
    def label(self) -> str:
        return f"{self.month:%Y-%m}"


@dataclass(frozen=True)
class _Interval:
    starts: datetime
    ends: datetime
    price: object | None  # a PlanPrice or SubscriptionPrice, or None: no price then


def _in_effect(prices: list, instant: datetime):
    """The latest of ``prices`` (ascending by ``effective_from``) in effect at ``instant``."""
    found = None
    for price in prices:
        if price.effective_from > instant:
            break
        found = price
    return found


def price_intervals(start: datetime, end: datetime, overrides: list, plan_prices: list):
    """The prices in effect from ``start`` to ``end``: the subscription's own (``overrides``)
    where it has one, else its plan's; a new interval at each change of the price in effect."""
    moments = sorted(
        {start}
        | {
            price.effective_from
            for price in (*overrides, *plan_prices)
            if start < price.effective_from < end
        }
    )
    intervals: list[_Interval] = []
    for moment in moments:
        price = _in_effect(overrides, moment) or _in_effect(plan_prices, moment)
        if intervals and intervals[-1].price == price:
            continue
        if intervals:
            intervals[-1] = _Interval(intervals[-1].starts, moment, intervals[-1].price)
        intervals.append(_Interval(moment, end, price))
    return intervals


def _price_text(price, kind: str) -> str:
    unit = price.credit_price if kind == "base" else price.excess_price
    return f"{unit:f} {price.currency} per credit"


def build_statements(accounts: list[tuple[Subscription, date]], *, now: datetime) -> list:
    """The statement of each (account, local first day of a month), as of ``now`` (a period
    not closed yet: as recorded so far). Seven queries, whatever the number of accounts.

    Reads as the system: each account was resolved through the scoping layer by the caller,
    and a statement is the account's totals, which no plan gates (like its balance).
    """
    items = []
    for subscription, first_day in accounts:
        bounds = month_bounds(first_day, subscription.zone)
        closes_at = bounds.end + grace()
        previous_closed = bounds.start + grace()
        items.append((subscription, first_day, bounds, closes_at, previous_closed))
    if not items:
        return []
    subscriptions = {subscription.pk: subscription for subscription, *_ in items}
    latest_end = max(bounds.end for _, _, bounds, *_ in items)
    earliest_start = min(bounds.start for _, _, bounds, *_ in items)
    periods = {
        (period.subscription_id, period.start): period
        for period in BillingPeriod.objects.filter(
            subscription__in=subscriptions,
            start__in={bounds.start for _, _, bounds, *_ in items},
        )
    }
    overrides, plan_prices = defaultdict(list), defaultdict(list)
    for price in SubscriptionPrice.objects.filter(
        subscription__in=subscriptions, effective_from__lt=latest_end
    ).order_by("effective_from"):
        overrides[price.subscription_id].append(price)
    for price in PlanPrice.objects.filter(
        plan__in={subscription.plan for subscription in subscriptions.values()},
        effective_from__lt=latest_end,
    ).order_by("effective_from"):
        plan_prices[price.plan].append(price)

    plans, cutoffs = [], {}
    for subscription, first_day, bounds, closes_at, previous_closed in items:
        period = periods.get((subscription.pk, bounds.start))
        intervals = price_intervals(
            bounds.start, bounds.end, overrides[subscription.pk], plan_prices[subscription.plan]
        )
        cutoff = min(closes_at, now)
        if period is not None:
            cutoffs[period.pk] = (cutoff, intervals)
        plans.append(
            (subscription, first_day, bounds, closes_at, previous_closed, period, intervals)
        )

    usage = _usage_by_interval(cutoffs)
    late = _late_corrections(plans, now=now)
    grants = defaultdict(list)
    for grant in CreditGrant.objects.filter(
        subscription__in=subscriptions,
        effective_at__gte=earliest_start,
        effective_at__lt=latest_end,
    ).order_by("effective_at", "pk"):
        grants[grant.subscription_id].append(grant)
    # A lapse is written once its grant's expiry is past the grace window, so it belongs to
    # the statement whose window (from the previous period's close to this one's) holds the
    # moment it was written: the expiry's month, or the next one if the lapse came late.
    lapses = defaultdict(list)
    for lapse in GrantAdjustment.objects.filter(
        subscription__in=subscriptions,
        kind=GrantAdjustment.Kind.LAPSE,
        created_at__gt=earliest_start + grace(),
        created_at__lte=min(latest_end + grace(), now),
    ):
        lapses[lapse.subscription_id].append(lapse)

    statements = []
    for index, plan in enumerate(plans):
        subscription, first_day, bounds, closes_at, previous_closed, period, intervals = plan
        currency = next((i.price.currency for i in intervals if i.price is not None), None)
        statement = Statement(
            subscription=subscription,
            month=first_day,
            start=bounds.start,
            end=bounds.end,
            closes_at=closes_at,
            closed=closes_at <= now,
            currency=currency,
        )
        statement.lines.append(
            Line("base_allocation", "Base allocation", credits=subscription.base_allocation)
        )
        sums = usage.get(period.pk, {}) if period is not None else {}
        statement.lines += _usage_lines(intervals, sums)
        statement.lines += _grant_lines(
            [g for g in grants[subscription.pk] if bounds.start <= g.effective_at < bounds.end],
            currency,
        )
        drawn = sum((s["grant"] for s in sums.values()), ZERO)
        if drawn:
            statement.lines.append(Line("grants_used", "Credits drawn from grants", drawn))
        lapsed = -sum(
            (
                lapse.credits
                for lapse in lapses[subscription.pk]
                if previous_closed < lapse.created_at <= min(closes_at, now)
            ),
            ZERO,
        )
        if lapsed:
            statement.lines.append(Line("lapsed", "Grant credits lapsed at expiry", lapsed))
        late_credits, late_cost = late.get(index, (None, None))
        if late_credits or late_cost:
            statement.lines.append(
                Line(
                    "late_correction",
                    "Corrections to earlier periods recorded after they closed",
                    late_credits,
                    amount=round_money(late_cost, currency) if currency else None,
                )
            )
        statements.append(statement)
    return statements


def _usage_by_interval(cutoffs: dict[int, tuple[datetime, list[_Interval]]]) -> dict:
    """Per period, per price interval (its index): the credits by type and the ledger's cost,
    of the rows recorded until the period's cutoff. One query."""
    if not cutoffs:
        return {}
    recorded = Q()
    buckets = []
    for period_id, (cutoff, intervals) in cutoffs.items():
        recorded |= Q(period_id=period_id, recorded_at__lte=cutoff)
        buckets += [
            When(period_id=period_id, timestamp__gte=interval.starts, then=Value(number))
            for number, interval in reversed(list(enumerate(intervals)))
            if number
        ]
    rows = (
        CreditEvent.objects.filter(recorded)
        .annotate(
            interval=Case(*buckets, default=Value(0), output_field=IntegerField())
            if buckets
            else Value(0, output_field=IntegerField())
        )
        .order_by()
        .values("period_id", "interval")
        .annotate(
            credits=Coalesce(Sum("credits"), ZERO),
            excess=Coalesce(Sum("excess_credits"), ZERO),
            grant=Coalesce(Sum("grant_credits"), ZERO),
            cost=Coalesce(Sum("cost"), ZERO),
        )
    )
    usage: dict[int, dict[int, dict]] = defaultdict(dict)
    for row in rows:
        usage[row["period_id"]][row["interval"]] = row
    return usage


def _late_corrections(plans: list, *, now: datetime) -> dict[int, tuple[Decimal, Decimal]]:
    """Per statement (its index): the credits and cost of earlier periods' rows recorded after
    the previous period closed and until this one did. One query."""
    wanted = {}
    for index, (subscription, _, bounds, closes_at, previous_closed, *_) in enumerate(plans):
        if previous_closed >= now:
            continue
        wanted[index] = Q(
            subscription_id=subscription.pk,
            timestamp__lt=bounds.start,
            recorded_at__gt=previous_closed,
            recorded_at__lte=min(closes_at, now),
        )
    if not wanted:
        return {}
    where = Q()
    for condition in wanted.values():
        where |= condition
    sums = CreditEvent.objects.filter(where).aggregate(
        **{f"credits_{index}": Sum("credits", filter=q) for index, q in wanted.items()},
        **{f"cost_{index}": Sum("cost", filter=q) for index, q in wanted.items()},
    )
    return {
        index: (sums[f"credits_{index}"] or ZERO, sums[f"cost_{index}"] or ZERO) for index in wanted
    }


def _usage_lines(intervals: list[_Interval], sums: dict) -> list[Line]:
    """Base credits (credits less grant-drawn and excess) and excess credits at each price in
    effect; an interval without excess has no excess line."""
    lines = []
    for kind in ("base", "excess"):
        for number, interval in enumerate(intervals):
            row = sums.get(number, {})
            if kind == "base":
                credits = (
                    row.get("credits", ZERO) - row.get("grant", ZERO) - row.get("excess", ZERO)
                )
            else:
                credits = row.get("excess", ZERO)
                if not credits:
                    continue
            price = interval.price
            label = "Base credits" if kind == "base" else "Excess credits"
            unit = None
            if price is not None:
                unit = price.credit_price if kind == "base" else price.excess_price
                label = f"{label} at {_price_text(price, kind)}"
            else:
                label = f"{label} (no price in effect)"
            lines.append(
                Line(
                    kind,
                    label,
                    credits,
                    unit_price=unit,
                    amount=None if price is None else line_amount(credits, unit, price.currency),
                    starts=interval.starts,
                    ends=interval.ends,
                )
            )
    return lines


def _grant_lines(grants: list, currency: str | None) -> list[Line]:
    return [
        Line(
            "grant_bought",
            f"{grant.get_kind_display()}: {grant.reason}",
            grant.credits,
            amount=round_money(grant.price, currency) if currency else None,
            starts=grant.effective_at,
            ends=grant.expires_at,
        )
        for grant in grants
    ]


def with_sub_accounts(statement: Statement, sub_statements: list[Statement]) -> Statement:
    """The parent's statement rolled up: a line per sub-account with its total (added when the
    sub-account is closed too and bills in the parent's currency)."""
    for sub in sub_statements:
        same_money = sub.currency is not None and sub.currency == statement.currency
        note = "" if sub.closed else " (not closed yet)"
        if sub.currency is not None and not same_money:
            note += f" (in {sub.currency}, not added)"
        statement.lines.append(
            Line(
                "sub_account",
                f"Sub-account {sub.subscription.name}{note}",
                amount=sub.total if same_money and sub.closed else None,
            )
        )
    return statement


# --- Selectors ----------------------------------------------------------------------------------


def local_month(period: BillingPeriod) -> date:
    """The local first day of the period's month."""
    return local_date(period.start, period.subscription.zone)


def closed_periods(*, principal, subscription: Subscription, now: datetime):
    """The subscription's closed periods the principal sees, newest first."""
    return (
        BillingPeriod.objects.visible_to(principal)
        .filter(subscription=subscription, end__lte=now - grace())
        .select_related("subscription")
        .order_by("-start")
    )


def statement_for(
    *, principal, subscription: Subscription, month: date, now: datetime, open_too: bool = False
) -> Statement:
    """The statement of ``subscription`` (resolved through the scoping layer) for the local
    ``month``, rolled up with the sub-accounts the principal sees. A month without a period is
    a ``StatementNotFound``; an open one a ``PeriodNotClosed`` unless ``open_too``."""
    bounds = month_bounds(month, subscription.zone)
    period_exists = (
        BillingPeriod.objects.visible_to(principal)
        .filter(subscription=subscription, start=bounds.start)
        .exists()
    )
    if not period_exists:
        raise StatementNotFound(month=f"{month:%Y-%m}")
    if bounds.end + grace() > now and not open_too:
        raise PeriodNotClosed(month=f"{month:%Y-%m}", closes_at=(bounds.end + grace()).isoformat())
    subs = list(
        Subscription.objects.visible_to(principal).filter(parent=subscription).order_by("name")
    )
    statement, *sub_statements = build_statements(
        [(subscription, month), *((sub, month) for sub in subs)], now=now
    )
    return with_sub_accounts(statement, sub_statements)


# --- The statement.closed event -----------------------------------------------------------------


# Each period whose grace window ended (within ``ANNOUNCE_WITHIN``) and that no run claimed yet,
# claimed by inserting its row; the unique (subscription, period) makes two runs claim it once.
CLAIM_CLOSED = """
INSERT INTO {closure} (subscription_id, period_id, closed_at, announced_at)
SELECT p.subscription_id, p.id, p."end" + %(grace)s, %(now)s
FROM {period} p
WHERE p."end" <= %(closed_before)s AND p."end" > %(announce_after)s
  AND NOT EXISTS (SELECT 1 FROM {closure} c
                  WHERE c.subscription_id = p.subscription_id AND c.period_id = p.id)
ORDER BY p.subscription_id, p.id
LIMIT %(chunk)s
ON CONFLICT (subscription_id, period_id) DO NOTHING
RETURNING period_id
"""


def _claim_closed(*, now: datetime, chunk: int) -> list[int]:
    adapt = connection.ops.adapt_datetimefield_value
    params = {
        "grace": grace(),
        "now": adapt(now),
        "closed_before": adapt(now - grace()),
        "announce_after": adapt(now - grace() - ANNOUNCE_WITHIN),
        "chunk": chunk,
    }
    sql = CLAIM_CLOSED.format(
        closure=StatementClosure._meta.db_table, period=BillingPeriod._meta.db_table
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [period_id for (period_id,) in cursor.fetchall()]


def announce_closed_statements(*, now: datetime, chunk: int = ANNOUNCE_CHUNK) -> int:
    """Publish ``statement.closed`` once for each period whose grace window ended; return how
    many periods closed. Each chunk is claimed and published in one transaction (the deliveries
    are queued after it commits); only subscriptions with webhook endpoints have their
    statements read."""
    closed = 0
    while True:
        with transaction.atomic():
            claimed = _claim_closed(now=now, chunk=chunk)
            closed += len(claimed)
            periods = list(
                BillingPeriod.objects.filter(
                    pk__in=claimed, subscription__webhook_endpoints__enabled=True
                )
                .distinct()
                .select_related("subscription")
            )
            statements = build_statements(
                [(period.subscription, local_month(period)) for period in periods],
                now=now,
            )
            for statement in statements:
                _publish_closed(statement, now=now)
        if len(claimed) < chunk:
            return closed


def _publish_closed(statement: Statement, *, now: datetime) -> None:
    subscription = statement.subscription
    total = statement.total
    money = "" if total is None else f": {total:f} {statement.currency}"
    webhooks.publish(
        subscription=subscription,
        event_type="statement.closed",
        cause=f"statement_closed:{subscription.pk}:{statement.label}",
        summary=f"{subscription.name}: the statement for {statement.month:%B %Y} is closed{money}.",
        data={
            "month": statement.label,
            "period": {"start": statement.start.isoformat(), "end": statement.end.isoformat()},
            "closed_at": statement.closes_at.isoformat(),
            "currency": statement.currency,
            "total": None if total is None else f"{total:f}",
            "url": f"{settings.SITE_URL.rstrip('/')}"
            f"{reverse('statement', kwargs={'month': statement.label})}"
            f"?{urlencode({'subscription': subscription.pk})}",
        },
        now=now,
    )


# --- As data and as a CSV file --------------------------------------------------------------------

CSV_COLUMNS = ("Kind", "Description", "From", "To", "Credits", "Unit price", "Amount", "Currency")


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"


def _credits(value: Decimal | None) -> str | None:
    return None if value is None else format_credits(value, grouped=False)


def _local(instant: datetime | None, statement: Statement) -> str | None:
    return None if instant is None else instant.astimezone(statement.subscription.zone).isoformat()


def line_data(line: Line, statement: Statement) -> dict:
    """One line as the JSON answer gives it: decimals as exact strings, instants local."""
    return {
        "kind": line.kind,
        "description": line.description,
        "from": _local(line.starts, statement),
        "to": _local(line.ends, statement),
        "credits": _credits(line.credits),
        "unit_price": _money(line.unit_price),
        "amount": _money(line.amount),
    }


def statement_data(statement: Statement) -> dict:
    subscription = statement.subscription
    return {
        "subscription": {"id": subscription.pk, "name": subscription.name},
        "month": statement.label,
        "timezone": subscription.timezone,
        "period": {"start": statement.start, "end": statement.end},
        "closed": statement.closed,
        "closes_at": statement.closes_at,
        "currency": statement.currency,
        "lines": [line_data(line, statement) for line in statement.lines],
        "total": _money(statement.total),
    }


def statement_table(statement: Statement) -> CsvTable:
    """The lines, then the total (the sum of the amounts above it)."""
    rows = [
        [
            line.kind,
            line.description,
            _local(line.starts, statement),
            _local(line.ends, statement),
            _credits(line.credits),
            _money(line.unit_price),
            _money(line.amount),
            statement.currency if line.amount is not None else None,
        ]
        for line in statement.lines
    ]
    rows.append(
        ["total", "Total", None, None, None, None, _money(statement.total), statement.currency]
    )
    return CsvTable(columns=CSV_COLUMNS, rows=rows, text_columns=frozenset({"Description"}))


def statement_filename(statement: Statement) -> str:
    label = statement.label if statement.closed else f"{statement.label}-provisional"
    return csv_filename(
        subscription=statement.subscription, report="statement", timeframe_label=label
    )
