"""What a scheduled report says, and the email that carries it.

``build_report`` reads everything once per (schedule, period): the figures, the chart and the
CSV attachments. ``report_message`` then makes one email per recipient, who each get their
own unsubscribe link. Everything is read with the **owner's** visibility (``visible_to``), so a
report never shows its recipients more than the person who set it up may see.

Figures come from the daily rollups (``DailyUsage``), like the dashboards; the balances from
the billing periods' counters (``credits.selectors.balance``). CSV attachments are the
catalogue's reports (``reports.catalogue``) written by ``reports.exports``, as the endpoints
write them, with the parameters a person would give them for the same period and scope: the
files are byte for byte what the endpoints return. A monthly report of a subscription also
carries its latest closed statement (``reports.statements``), as the statement endpoint writes
it. Per-member usage (TOP MEMBERS, the usage by
user and by team files) is left out on plans without team views.

MIME structure: multipart/mixed [ multipart/related [ multipart/alternative [ text, HTML ],
the chart as an inline PNG (``cid:``) ], the CSV files ]. The HTML uses inline styles and
tables only, which is what mail clients render reliably.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from email import encoders
from email.mime.base import MIMEBase
from email.mime.image import MIMEImage

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import SafeMIMEMultipart
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import urlencode

from core.display import format_credits
from credits.periods import local_midnight, month_bounds, month_start, next_month_start
from credits.selectors import balance

from . import selectors, statements
from .catalogue import BY_SLUG, CREDIT_USAGE_EXPORT, PLANS_WITH_TEAM_VIEWS
from .charts import Series, daily_credits_png
from .costs import NO_COST, Cost, cost
from .cycle_usage import Trend
from .exports import (
    CopiedCsvTable,
    CsvTable,
    credit_usage_table,
    csv_chunks,
    csv_filename,
    report_table,
)
from .models import ReportSchedule
from .schedules import MONTHLY, ReportPeriod
from .timeframes import days_timeframe, resolve_timeframe
from .usage import Sums, UsageQuery, grouped

TOP = 5
ZERO = Decimal("0.0000")
PERCENT = Decimal("0.1")
CHART_CID = "daily-credits-chart"
# All CSV files of one email together, before base64 (which adds a third): well below the
# 25 MB that common mail servers accept. A file that does not fit is named in the email instead.
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024


# --- The figures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranked:
    label: str
    credits: str
    share_percent: str
    cost: Cost = NO_COST


@dataclass(frozen=True)
class AccountBalance:
    """One billing period of one account, as of the report."""

    name: str
    month: str
    ended: bool
    used: str
    base_allocation: str
    remaining: str
    utilisation_percent: str
    excess_used: str
    excess_allowance: str
    soft_mode: bool
    environment_used: str | None


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes | None  # None: too large to attach (see MAX_ATTACHMENT_BYTES)


@dataclass
class Report:
    """Everything one (schedule, period) report says; the same for every recipient."""

    schedule: ReportSchedule
    period: ReportPeriod
    as_of: datetime
    subject: str
    context: dict
    chart_png: bytes
    attachments: list[Attachment] = field(default_factory=list)


def scoped_usage(*, schedule: ReportSchedule, first_day, last_day) -> UsageQuery:
    """The usage of the schedule's scope on these local days, as its owner sees it. Rollup
    days are each account's local dates, so sub-accounts in other time zones contribute their
    own local days, as in the usage reports."""
    narrowed = {}
    if schedule.scope == ReportSchedule.Scope.ENVIRONMENT:
        narrowed["environment"] = schedule.environment_id
    return UsageQuery(
        principal=schedule.created_by,
        accounts=schedule.accounts(),
        timeframe=days_timeframe(
            name="custom", first_day=first_day, last_day=last_day, zone=schedule.subscription.zone
        ),
        narrowed=narrowed,
    )


def _percent(part: Decimal, whole: Decimal) -> str:
    if not whole:
        return "0.0"
    return f"{(part * 100 / whole).quantize(PERCENT, ROUND_HALF_UP):f}"


def _trend(trend: Trend) -> dict:
    """The trend card's words: the previous period's credits, the change in percent with its
    sign (none when the previous period had no usage), and whether usage went up or down."""
    change = None if trend.percent is None else f"{trend.percent:+f}"
    return {
        "previous_credits": format_credits(trend.last_period),
        "change_percent": change,
        "direction": trend.direction,
    }


def _by_member(usage: UsageQuery) -> tuple[Sums, list[tuple[str, Sums]]]:
    """One query: the total, and the sums of each person with usage, most credits first
    (what an API key did alone belongs to nobody and only counts in the total)."""
    groups = usage.sums("user_id", "user__email")
    total = sum((sums for _, sums in groups), Sums())
    people = [(row["user__email"], sums) for row, sums in groups if row["user_id"]]
    return total, sorted(people, key=lambda person: (-person[1].credits, person[0]))


def _top_members(people: list[tuple[str, Sums]], total: Decimal, currency) -> list[Ranked]:
    return [
        Ranked(
            email,
            format_credits(sums.credits),
            _percent(sums.credits, total),
            cost(sums.cost, currency),
        )
        for email, sums in people[:TOP]
    ]


def _product_series(usage: UsageQuery) -> tuple[list[Series], dict[str, Decimal]]:
    """Credits per day and product, from the daily rows of the narrowest rollup, and each
    product's cost (unrounded) by name."""
    by_product: dict[tuple, dict] = {}
    costs: dict[str, Decimal] = {}
    rows = usage.daily_rows(usage.rollup("product"))
    for row, sums in grouped(rows, "day", "product_id", "product__name"):
        key = (row["product_id"], row["product__name"] or "No product")
        days = by_product.setdefault(key, {})
        days[row["day"]] = days.get(row["day"], ZERO) + sums.credits
        costs[key[1]] = costs.get(key[1], ZERO) + sums.cost
    series = [Series(name, product_id, days) for (product_id, name), days in by_product.items()]
    return series, costs


def _top_products(
    series: list[Series], total: Decimal, costs: dict[str, Decimal], currency
) -> list[Ranked]:
    ranked = sorted(series, key=lambda one: (-one.total, one.name))[:TOP]
    return [
        Ranked(
            one.name,
            format_credits(one.total),
            _percent(one.total, total),
            cost(costs.get(one.name, ZERO), currency),
        )
        for one in ranked
    ]


def _balances(schedule: ReportSchedule, period: ReportPeriod, now: datetime) -> list:
    """The billing period holding the report's last day, for each account, as of ``now``."""
    rows = []
    for account in schedule.accounts():
        environment = schedule.environment if account == schedule.subscription else None
        state = balance(
            subscription=account,
            at=local_midnight(period.last_day, account.zone),
            environment=environment,
        )
        rows.append(
            AccountBalance(
                name=account.name,
                month=f"{state.period_start.astimezone(account.zone):%B %Y}",
                ended=state.period_end <= now,
                used=format_credits(state.used),
                base_allocation=format_credits(state.base_allocation),
                remaining=format_credits(state.remaining),
                utilisation_percent=f"{state.utilisation_percent.quantize(PERCENT):f}",
                excess_used=format_credits(state.excess_used),
                excess_allowance=format_credits(state.excess_allowance),
                soft_mode=state.limit_mode == account.LimitMode.SOFT,
                environment_used=(
                    None
                    if state.environment_used is None
                    else format_credits(state.environment_used)
                ),
            )
        )
    return rows


def late_usage_until(schedule: ReportSchedule, period: ReportPeriod) -> datetime:
    """Until when usage of the period's days can still be recorded: the end of the billing
    period holding its last day, plus the grace window for late events."""
    end = local_midnight(next_month_start(month_start(period.last_day)), schedule.subscription.zone)
    return end + timedelta(hours=settings.LATE_EVENT_GRACE_HOURS)


def local_text(instant: datetime, zone) -> str:
    """``23 November 2026, 08:00 CET`` in ``zone``, named as every time on the pages is
    (formatted here: the template ``date`` filter would convert it back to the server's time
    zone)."""
    local = instant.astimezone(zone)
    return f"{local.day} {local:%B %Y, %H:%M} {local.tzname()}"


def dashboard_url(schedule: ReportSchedule, period: ReportPeriod) -> str:
    """The usage page of the scope, on the period's days (clipped to one billing period, as
    the pages show one at a time)."""
    month = month_start(period.last_day)
    days = {
        "period": f"{month:%Y-%m}",
        "from": max(period.first_day, month).isoformat(),
        "to": period.last_day.isoformat(),
    }
    if schedule.scope == ReportSchedule.Scope.ENVIRONMENT:
        path = reverse("environment-usage")
        query = {"environment": schedule.environment.public_id, **days}
    else:
        path = reverse("admin-credit-usage")
        query = {"subscription": schedule.subscription_id, **days}
    return f"{settings.SITE_URL.rstrip('/')}{path}?{urlencode(query)}"


# --- Attachments -----------------------------------------------------------------------------


def _endpoint_parameters(period: ReportPeriod) -> dict:
    """What a person passes to ``/api/v1/reports/<report>/`` for the same period."""
    if period.frequency == MONTHLY:
        return {"period": f"{period.first_day:%Y-%m}"}
    return {"start": period.first_day.isoformat(), "end": period.last_day.isoformat()}


def report_attachments(
    *, schedule: ReportSchedule, period: ReportPeriod, now: datetime
) -> list[Attachment]:
    """The chosen CSV reports, exactly as the endpoints return them for the schedule's owner,
    period and scope at this moment; those beyond ``MAX_ATTACHMENT_BYTES`` (all files
    together) are named but not attached, and those the plan does not include are left out."""
    owner = schedule.created_by
    subscription = selectors.report_subscription(
        user=owner, subscription_id=schedule.subscription_id
    )
    timeframe = resolve_timeframe(
        subscription=subscription, params=_endpoint_parameters(period), now=now
    )
    budget = MAX_ATTACHMENT_BYTES
    attachments = []
    files = []
    for name in schedule.attached_reports:
        if name == CREDIT_USAGE_EXPORT:
            files.append(_credit_usage(schedule, timeframe))
        elif BY_SLUG[name].per_member and not subscription.has_team_views:
            continue  # attached before the subscription moved to a plan without team views
        else:
            files.append(_report(schedule, name, subscription, timeframe))
    if period.frequency == MONTHLY and schedule.scope != ReportSchedule.Scope.ENVIRONMENT:
        files += _statement(schedule, subscription, period, now)
    for filename, table in files:
        content = _read_at_most(csv_chunks(table), budget)
        if content is not None:
            budget -= len(content)
        attachments.append(Attachment(filename, content))
    return attachments


def _read_at_most(chunks, limit: int) -> bytes | None:
    parts, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _report(schedule, name, subscription, timeframe) -> tuple[str, CsvTable]:
    """What ``/api/v1/reports/<name>/?format=csv`` writes for the schedule's owner: the
    catalogue report's rows in their default order, written by ``reports.exports``."""
    report = BY_SLUG[name]
    rows = report.rows(
        user=schedule.created_by,
        subscription=subscription,
        timeframe=timeframe,
        include_sub_accounts=schedule.scope == ReportSchedule.Scope.WITH_SUB_ACCOUNTS,
    )
    filename = csv_filename(
        subscription=subscription, report=report.slug, timeframe_label=timeframe.label
    )
    return filename, report_table(report, rows)


def _statement(schedule, subscription, period, now) -> list[tuple[str, CsvTable]]:
    """The latest closed statement up to the report's month, as ``/api/v1/statements/<month>/
    ?format=csv`` writes it for the schedule's owner (an admin of the subscription; nobody else
    reads statements). A monthly report goes out on the 1st, before its own month's grace
    window for late events ends, so it usually carries the month before's statement."""
    report_month = month_bounds(period.first_day, subscription.zone).start
    latest = (
        statements.closed_periods(principal=schedule.created_by, subscription=subscription, now=now)
        .filter(start__lte=report_month)
        .first()
    )
    if latest is None:
        return []
    statement = statements.statement_for(
        principal=schedule.created_by,
        subscription=subscription,
        month=statements.local_month(latest),
        now=now,
    )
    return [(statements.statement_filename(statement), statements.statement_table(statement))]


def _credit_usage(schedule: ReportSchedule, timeframe) -> tuple[str, CopiedCsvTable]:
    """The credit usage export of the billing period (the endpoint exports the current one,
    so it is asked as of the period's first instant)."""
    environment = schedule.environment
    export = selectors.credit_usage_export(
        user=schedule.created_by,
        scope="environment" if environment else "subscription",
        subscription_id=schedule.subscription_id,
        environment_id=environment.public_id if environment else None,
        now=timeframe.start,
    )
    filename = csv_filename(
        subscription=export.subscription,
        report=f"credit-usage-{export.scope}",
        timeframe_label=export.timeframe.label,
    )
    return filename, credit_usage_table(export)


# --- The report ------------------------------------------------------------------------------


def build_report(*, schedule: ReportSchedule, period: ReportPeriod, now: datetime) -> Report:
    """Read the figures, draw the chart and make the attachments of one report."""
    zone = schedule.subscription.zone
    usage = scoped_usage(schedule=schedule, first_day=period.first_day, last_day=period.last_day)
    totals, people = _by_member(usage)
    used = totals.credits
    previous_first, previous_last = period.previous_days()
    previous = (
        scoped_usage(schedule=schedule, first_day=previous_first, last_day=previous_last)
        .total()
        .credits
    )
    series, product_costs = _product_series(usage)
    currency = usage.currency  # the owner's: an admin's schedule shows money
    late_until = late_usage_until(schedule, period)
    team_views = schedule.subscription.has_team_views
    context = {
        "schedule": schedule,
        "scope_label": schedule.scope_label,
        "period": period,
        "monthly": period.frequency == MONTHLY,
        "timezone": zone.key,
        "as_of": local_text(now, zone),
        "late_until": local_text(late_until, zone),
        "late_usage_closed": late_until <= now,
        "credits_used": format_credits(used),
        "cost": cost(totals.cost, currency),  # one line, rounded once
        "excess_credits": format_credits(totals.excess_credits),
        "trend": _trend(Trend(used, previous, last_period_through=previous_last)),
        "balances": _balances(schedule, period, now),
        # Names people: only on plans with team views (``reports.catalogue``).
        "top_members": _top_members(people, used, currency) if team_views else None,
        "plans_with_team_views": PLANS_WITH_TEAM_VIEWS,
        "top_products": _top_products(series, used, product_costs, currency),
        "chart_cid": CHART_CID,
        "dashboard_url": dashboard_url(schedule, period),
    }
    report = Report(
        schedule=schedule,
        period=period,
        as_of=now,
        subject=f"{schedule.name}: {schedule.scope_label}, {period.label}",
        context=context,
        chart_png=daily_credits_png(days=period.days, series=series),
        attachments=report_attachments(schedule=schedule, period=period, now=now),
    )
    context["attachment_names"] = [a.filename for a in report.attachments if a.content]
    context["too_large"] = [a.filename for a in report.attachments if a.content is None]
    context["max_attachment_mb"] = MAX_ATTACHMENT_BYTES // (1024 * 1024)
    return report


# --- The email -------------------------------------------------------------------------------


class ReportMessage(EmailMultiAlternatives):
    """An email whose HTML shows images from the message itself (``cid:``), wrapped with the
    text and HTML in multipart/related as RFC 2387 says, ahead of the real attachments."""

    def __init__(self, *args, inline_images: list[tuple[str, bytes]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.inline_images = list(inline_images)

    def _create_alternatives(self, msg):
        msg = super()._create_alternatives(msg)
        if not self.inline_images:
            return msg
        related = SafeMIMEMultipart(_subtype="related", encoding=self.encoding)
        related.attach(msg)
        for content_id, content in self.inline_images:
            image = MIMEImage(content, "png")
            image.add_header("Content-ID", f"<{content_id}>")
            image.add_header("Content-Disposition", "inline", filename=f"{content_id}.png")
            related.attach(image)
        return related


def csv_part(attachment: Attachment) -> MIMEBase:
    """A CSV file, base64-encoded so that its bytes (CRLF line ends included) arrive intact."""
    part = MIMEBase("text", "csv", charset="utf-8")
    part.set_payload(attachment.content)
    encoders.encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=attachment.filename)
    return part


def report_message(
    *, report: Report, recipient: str, unsubscribe_url: str, test: bool = False
) -> ReportMessage:
    context = {
        **report.context,
        "unsubscribe_url": unsubscribe_url,
        "recipient": recipient,
        "test": test,
    }
    subject = f"[Test] {report.subject}" if test else report.subject
    message = ReportMessage(
        subject=subject,
        body=render_to_string("emails/report.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[recipient],
        headers={
            # RFC 2369 and RFC 8058: mail clients offer their own one-click unsubscribe.
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Auto-Submitted": "auto-generated",
        },
        inline_images=[(CHART_CID, report.chart_png)],
    )
    message.attach_alternative(render_to_string("emails/report.html", context), "text/html")
    for attachment in report.attachments:
        if attachment.content is not None:
            message.attach(csv_part(attachment))
    return message
