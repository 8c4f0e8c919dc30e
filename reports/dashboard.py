"""Reads behind the usage pages: the admin's analytics, a project manager's environments and a
member's own usage.

Every figure comes from a rollup (kept in step with the ledger by the recording service)
through ``visible_to``; only "recent runs" reads ledger rows, one page at a time through an
index, never counted. Each page costs a fixed number of queries whatever the data size: one
query returns the credits per day and product of the whole billing period, and the cards,
chart, day-over-day view and "credits by product" table are all cut from it in Python (a
period has at most 31 days); the team pages add one for the usage per member, of which they
render one page.

Which rollup: the admin's page reads ``ProductRollup`` (rows per day bounded by the products
and features, whatever the volume) and the member tables ``PersonRollup`` (one monthly row per
person for a whole period); the rest read ``DailyUsage``, narrowed to an environment or a
person.

Days are local dates in the subscription's time zone, like ``DailyUsage.day``; a "cycle" is one
billing period seen that way (the 1st through the last day of the month, inclusive).
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from functools import cached_property

from django.core.paginator import InvalidPage, Page, Paginator
from django.db.models import Max, Q, QuerySet, Sum

from accounts.models import (
    Environment,
    Membership,
    Role,
    Subscription,
    Team,
    TeamMembership,
    User,
)
from core.display import format_credits, format_moment
from core.money import CREDIT_PLACES
from credits.models import (
    BillingPeriod,
    CreditEvent,
    CreditLimit,
    DailyUsage,
    PersonRollup,
    Product,
    ProductRollup,
    RollupGrain,
)
from credits.periods import (
    PLACEABLE_YEARS,
    is_placeable_day,
    local_date,
    local_midnight,
    next_month_start,
    previous_month_start,
)
from credits.selectors import Balance, balance

ZERO = Decimal("0.0000")
PERCENT_PLACES = Decimal("0.1")
RUNS_PER_PAGE = 20
MEMBERS_PER_PAGE = 50
PAST_PERIODS_SHOWN = 13
EXPORT_PATH = "/api/v1/exports/credit-usage/"
CHART_COLOURS = 10  # the palette's size in reports/static/reports/charts.js

ROLE_RANK = {Role.SUBSCRIPTION_ADMIN: 0, Role.PROJECT_MANAGER: 1, Role.MEMBER: 2}
ROLE_LABELS = dict(Role.choices)
ROLE_LABEL_RANK = {label: ROLE_RANK[value] for value, label in Role.choices}
_PAID_PLANS = [
    label for value, label in Subscription.Plan.choices if value != Subscription.Plan.FREE
]
# "Pro, Premium or Scale": the plans whose admins and managers see per-member usage.
PLANS_WITH_TEAM_VIEWS = ", ".join(_PAID_PLANS[:-1]) + f" or {_PAID_PLANS[-1]}"


def _credits(value) -> Decimal:
    return (value or ZERO).quantize(CREDIT_PLACES, rounding=ROUND_HALF_UP)


def _percent(part: Decimal, whole: Decimal) -> Decimal | None:
    if not whole:
        return None
    return (part * 100 / whole).quantize(PERCENT_PLACES, rounding=ROUND_HALF_UP)


def _per_day(total: Decimal, days: int) -> Decimal:
    return _credits(total / days) if days > 0 else ZERO


def export_url(
    scope: str, *, subscription: Subscription, environment: Environment | None = None
) -> str:
    """The CSV export (of the current billing period) of ``scope``: mine, environment or
    subscription; the environment, when there is one, decides the subscription."""
    where = (
        f"environment={environment.public_id}"
        if environment is not None
        else f"subscription={subscription.pk}"
    )
    return f"{EXPORT_PATH}?scope={scope}&{where}&format=csv"


# --- Cycles and date ranges -----------------------------------------------------------------


@dataclass(frozen=True)
class Cycle:
    """One billing period in the subscription's local dates."""

    subscription: Subscription
    first_day: date
    today: date

    @property
    def reset_day(self) -> date:
        return next_month_start(self.first_day)

    @property
    def last_day(self) -> date:
        return self.reset_day - timedelta(days=1)

    @property
    def is_current(self) -> bool:
        return self.first_day <= self.today <= self.last_day

    @property
    def last_elapsed_day(self) -> date:
        return min(self.today, self.last_day)

    @property
    def elapsed_day_count(self) -> int:
        return max(0, (self.last_elapsed_day - self.first_day).days + 1)

    @property
    def start(self) -> datetime:
        return local_midnight(self.first_day, self.subscription.zone)

    @property
    def month(self) -> str:
        return f"{self.first_day:%Y-%m}"

    def previous(self) -> "Cycle":
        return Cycle(self.subscription, previous_month_start(self.first_day), self.today)


@dataclass(frozen=True)
class Preset:
    key: str  # the ``range`` query parameter that marks it chosen
    label: str
    first_day: date
    last_day: date
    selected: bool


@dataclass(frozen=True)
class DateRange:
    """The days of one cycle that a page shows (the whole cycle unless a range was chosen).

    ``chosen`` is the quick range the person clicked (``range=last_14_days``), if any.
    """

    cycle: Cycle
    first_day: date
    last_day: date
    chosen: str = ""

    @property
    def days(self) -> list[date]:
        return _days(self.first_day, self.last_day)

    @property
    def elapsed_days(self) -> list[date]:
        return _days(self.first_day, min(self.last_day, self.cycle.today))

    @property
    def is_whole_cycle(self) -> bool:
        return (self.first_day, self.last_day) == (self.cycle.first_day, self.cycle.last_day)

    @property
    def start(self) -> datetime:
        return local_midnight(self.first_day, self.cycle.subscription.zone)

    @property
    def end(self) -> datetime:
        return local_midnight(self.last_day + timedelta(days=1), self.cycle.subscription.zone)

    @property
    def presets(self) -> list[Preset]:
        """The quick ranges, each inside the cycle like every range of the page.

        "Last 7 days" and "Last 14 days" end on the cycle's last elapsed day and start at most
        6 (13) days earlier, never before the cycle's 1st: on the 3rd of the current month
        both are the 1st to the 3rd, the period so far. At most one is marked, even when
        several cover the shown days: the one clicked (``range``), else the narrowest.
        """
        cycle = self.cycle
        last = cycle.last_elapsed_day
        choices = [
            ("whole_period", "Whole period", cycle.first_day, cycle.last_day),
            ("last_7_days", "Last 7 days", max(cycle.first_day, last - timedelta(days=6)), last),
            ("last_14_days", "Last 14 days", max(cycle.first_day, last - timedelta(days=13)), last),
            ("last_day", "Today" if cycle.is_current else "Last day", last, last),
        ]
        shown = (self.first_day, self.last_day)
        matching = [key for key, _, first, final in choices if (first, final) == shown]
        narrowest_first = ("last_day", "last_7_days", "last_14_days", "whole_period")
        selected = (
            self.chosen
            if self.chosen in matching
            else next((key for key in narrowest_first if key in matching), None)
        )
        return [
            Preset(key, label, first, final, key == selected)
            for key, label, first, final in choices
        ]


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _parse_date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    return day if is_placeable_day(day) else None


def _parse_month(value: str | None) -> date | None:
    if not value:
        return None
    try:
        month = datetime.strptime(value, "%Y-%m").date()  # noqa: DTZ007 - a calendar month
    except ValueError:
        return None
    return month if is_placeable_day(month) else None


def date_range_from(
    *, subscription: Subscription, query: Mapping[str, str], now: datetime
) -> tuple[DateRange, list[str]]:
    """The date range that ``query`` asks for (``period=YYYY-MM``, ``from``/``to`` dates).

    Defaults to the whole current billing period. A past period can be looked back at, a
    future one cannot; a range is clipped to its period. Returns the range and what was
    wrong with the query, for the page to say.
    """
    problems = []
    today = local_date(now, subscription.zone)
    current = Cycle(subscription, today.replace(day=1), today)
    cycle = current
    month = _parse_month(query.get("period"))
    if query.get("period") and month is None:
        problems.append("The billing period must be a month such as 2026-11.")
    elif month is not None and month > current.first_day:
        problems.append("That billing period has not started yet; showing the current one.")
    elif month is not None:
        cycle = Cycle(subscription, month, today)

    first, last = _parse_date(query.get("from")), _parse_date(query.get("to"))
    for name in ("from", "to"):
        if query.get(name) and _parse_date(query.get(name)) is None:
            problems.append(
                f"“{query.get(name)}” is not a date in the years {PLACEABLE_YEARS} "
                "(use YYYY-MM-DD)."
            )
    first = first or cycle.first_day
    last = last or cycle.last_day
    if first > last:
        problems.append("The range ended before it started; showing the whole period.")
        first, last = cycle.first_day, cycle.last_day
    if last < cycle.first_day or first > cycle.last_day:
        # A range left over from another period (e.g. after choosing a new period).
        first, last = cycle.first_day, cycle.last_day
    first, last = max(first, cycle.first_day), min(last, cycle.last_day)
    return DateRange(cycle, first, last, chosen=query.get("range") or ""), problems


# --- Credits per day and product --------------------------------------------------------------


@dataclass
class Cell:
    credits: Decimal = ZERO
    excess_credits: Decimal = ZERO
    runs: int = 0
    failed_runs: int = 0


@dataclass(frozen=True)
class ProductRow:
    product_id: int | None
    name: str
    credits: Decimal
    average_per_day: Decimal
    excess_credits: Decimal
    runs: int
    share_percent: Decimal | None
    enabled: bool


@dataclass(frozen=True)
class DayChange:
    day: date
    credits: Decimal
    change: Decimal | None
    change_percent: Decimal | None

    @property
    def title(self) -> str:
        return _day_title(self.day)


OTHER_PRODUCT = "Adjustments and other"


@dataclass
class CycleUsage:
    """Credits per (day, product) over one cycle: the source of cards, chart and tables."""

    cycle: Cycle
    cells: dict[tuple[date, int | None], Cell]
    product_names: dict[int | None, str]
    # What ``cycle_usage`` was asked for beside the cycle's cells, read in the same query:
    # credits per day of an earlier range (the trend's), and the features used in the cycle.
    earlier: dict[date, Decimal] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)

    def _cells(self, first: date, last: date) -> Iterable[tuple[int | None, Cell]]:
        for (day, product_id), cell in self.cells.items():
            if first <= day <= last:
                yield product_id, cell

    def total(self, first: date, last: date) -> Decimal:
        return _credits(sum((cell.credits for _, cell in self._cells(first, last)), ZERO))

    def excess(self, first: date, last: date) -> Decimal:
        return _credits(sum((cell.excess_credits for _, cell in self._cells(first, last)), ZERO))

    def runs(self, first: date, last: date) -> int:
        return sum(cell.runs for _, cell in self._cells(first, last))

    def failed_runs(self, first: date, last: date) -> int:
        return sum(cell.failed_runs for _, cell in self._cells(first, last))

    def day_totals(self) -> dict[date, Decimal]:
        totals: dict[date, Decimal] = defaultdict(lambda: ZERO)
        for (day, _), cell in self.cells.items():
            totals[day] += cell.credits
        return totals

    def active_product_ids(self, first: date, last: date) -> set[int | None]:
        return {product_id for product_id, cell in self._cells(first, last) if cell.credits}

    def product_rows(
        self, date_range: DateRange, enabled: Mapping[int, str] | None = None
    ) -> list[ProductRow]:
        """The "credits by product" table: enabled products first appear even at zero."""
        enabled = enabled or {}
        sums: dict[int | None, Cell] = {product_id: Cell() for product_id in enabled}
        for product_id, cell in self._cells(date_range.first_day, date_range.last_day):
            total = sums.setdefault(product_id, Cell())
            total.credits += cell.credits
            total.excess_credits += cell.excess_credits
            total.runs += cell.runs
        grand_total = sum((cell.credits for cell in sums.values()), ZERO)
        days = len(date_range.elapsed_days)
        rows = [
            ProductRow(
                product_id=product_id,
                name=self._name(product_id, enabled),
                credits=_credits(cell.credits),
                average_per_day=_per_day(cell.credits, days),
                excess_credits=_credits(cell.excess_credits),
                runs=cell.runs,
                share_percent=_percent(cell.credits, grand_total),
                enabled=product_id in enabled,
            )
            for product_id, cell in sums.items()
        ]
        return sorted(rows, key=lambda row: (-row.credits, row.name))

    def _name(self, product_id, enabled) -> str:
        return self.product_names.get(product_id) or enabled.get(product_id) or OTHER_PRODUCT

    def day_over_day(self, date_range: DateRange) -> list[DayChange]:
        totals = self.day_totals()
        changes = []
        for day in date_range.elapsed_days:
            credits = _credits(totals.get(day))
            previous_day = day - timedelta(days=1)
            if previous_day < self.cycle.first_day:
                changes.append(DayChange(day, credits, None, None))
                continue
            previous = _credits(totals.get(previous_day))
            changes.append(
                DayChange(day, credits, credits - previous, _percent(credits - previous, previous))
            )
        return changes

    def chart(self, date_range: DateRange) -> dict:
        """What the page's chart script draws: one point per day, one dataset per product.

        Values are numbers for plotting and exact decimal strings for the tooltip and tables;
        days after today have no value (a gap), not zero.
        """
        days = date_range.days
        today = self.cycle.today
        shown = set(days)
        product_ids = sorted(
            {product_id for (day, product_id) in self.cells if day in shown},
            key=lambda product_id: self._name(product_id, {}),
        )
        datasets = []
        for product_id in product_ids:
            values = [self.cells.get((day, product_id), Cell()).credits for day in days]
            datasets.append(
                {
                    "label": self._name(product_id, {}),
                    # A product keeps its colour on every page and in every range.
                    "color": -1 if product_id is None else product_id % CHART_COLOURS,
                    "values": [
                        None if day > today else float(value)
                        for day, value in zip(days, values, strict=True)
                    ],
                    "display": [_plain(value) for value in values],
                }
            )
        totals = self.day_totals()
        return {
            **_day_labels(days),
            "totals": [_plain(totals.get(day, ZERO)) for day in days],
            "future": [day > today for day in days],
            "datasets": datasets,
        }


def _day_title(day: date) -> str:
    """A day as the charts' tooltips and tables write it: "Mon 23 Nov 2026"."""
    return f"{day:%a} {day.day} {day:%b %Y}"


def _day_labels(days: list[date]) -> dict:
    return {
        "days": [day.isoformat() for day in days],
        "labels": [f"{day.day} {day:%b}" for day in days],
        "titles": [_day_title(day) for day in days],
    }


def _plain(value: Decimal) -> str:
    """A credit amount for people: the one credit format (``core.display``)."""
    return format_credits(value)


def cycle_usage(
    rows: QuerySet,
    cycle: Cycle,
    *,
    earlier: tuple[date, date] | None = None,
    with_features: bool = False,
) -> CycleUsage:
    """One query: credits, excess, runs per day and product of ``rows`` in ``cycle``.

    The same query also brings, when asked, what would otherwise be another pass over the
    rollup: the credits per day of the ``earlier`` range (first and last day, before the
    cycle; the trend's) and, ``with_features``, the features used in the cycle (grouped by
    feature too, then added up here). Either way it returns at most days x products
    (x features) rows, however many events there were.
    """
    days = Q(day__range=(cycle.first_day, cycle.last_day))
    if earlier is not None:
        days |= Q(day__range=earlier)
    dimensions = ["day", "product_id"] + (["feature"] if with_features else [])
    grouped = (
        rows.filter(days)
        .order_by()
        .values_list(*dimensions)
        .annotate(
            # An aggregate, not a grouping key: with the name's text among the keys,
            # PostgreSQL sorted (and spilled to disk) a month of rows instead of hashing them.
            product_name=Max("product__name"),
            credits_sum=Sum("credits"),
            excess_sum=Sum("excess_credits"),
            runs_sum=Sum("runs"),
            failed_sum=Sum("failed_runs"),
        )
    )
    cells: dict[tuple[date, int | None], Cell] = {}
    names: dict[int | None, str] = {}
    before: dict[date, Decimal] = defaultdict(lambda: ZERO)
    features: set[str] = set()
    for day, product_id, *feature, product_name, credits, excess, runs, failed in grouped:
        if day < cycle.first_day:
            before[day] += credits or ZERO
            continue
        cell = cells.get((day, product_id))
        if cell is None:
            cell = cells[day, product_id] = Cell()
        cell.credits += credits or ZERO
        cell.excess_credits += excess or ZERO
        cell.runs += runs or 0
        cell.failed_runs += failed or 0
        if product_id is not None:
            names[product_id] = product_name
        if feature and feature[0]:
            features.add(feature[0])
    for cell in cells.values():
        cell.credits, cell.excess_credits = _credits(cell.credits), _credits(cell.excess_credits)
    return CycleUsage(
        cycle=cycle,
        cells=cells,
        product_names=names,
        earlier={day: _credits(total) for day, total in before.items()},
        features=sorted(features),
    )


# --- Cards ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    this_period: Decimal
    last_period: Decimal
    last_period_through: date

    @property
    def percent(self) -> Decimal | None:
        return _percent(self.this_period - self.last_period, self.last_period)


def trend_days(cycle: Cycle) -> tuple[date, date]:
    """The days of last period that the trend compares with: from its first day up to the
    same day of the month as today (or its last day, if shorter)."""
    previous = cycle.previous()
    point = min(previous.first_day + (cycle.last_elapsed_day - cycle.first_day), previous.last_day)
    return previous.first_day, point


def trend_vs_last_month(usage: CycleUsage) -> Trend:
    """Credits so far this period against last period up to the same day of the month.

    ``usage`` must have been read with ``earlier=trend_days(cycle)``."""
    cycle = usage.cycle
    first, point = trend_days(cycle)
    last_period = sum(
        (credits for day, credits in usage.earlier.items() if first <= day <= point), ZERO
    )
    return Trend(
        this_period=usage.total(cycle.first_day, cycle.last_elapsed_day),
        last_period=_credits(last_period),
        last_period_through=point,
    )


@dataclass(frozen=True)
class RunOut:
    """When the base allocation runs out at the current pace."""

    day: date | None
    status: str  # "used_up", "projected", "lasts", "no_usage", "no_allocation"
    period_closed: bool = False  # a closed period states what happened, not a projection

    @property
    def title(self) -> str:
        if self.status == "used_up":
            return "Ran out on"
        return "Base allocation" if self.period_closed else "Projected run-out"

    @property
    def message(self) -> str:
        if self.period_closed and self.status == "lasts":
            return "Lasted the period"
        return {
            "used_up": "Allocation used up",
            "projected": "Runs out at this pace",
            "lasts": "Lasts until the reset",
            "no_usage": "No usage yet",
            "no_allocation": "No base allocation",
        }[self.status]


def projected_run_out(usage: CycleUsage, allocation: Decimal) -> RunOut:
    """The day the allocation runs out: already, or at the period's average daily pace.

    The pace counts today as a whole day, so early in the day it errs on the late side.
    """
    cycle = usage.cycle
    if not allocation:
        return RunOut(None, "no_allocation")
    totals = usage.day_totals()
    used = ZERO
    for day in _days(cycle.first_day, cycle.last_elapsed_day):
        used += totals.get(day, ZERO)
        if used >= allocation:
            return RunOut(day, "used_up", period_closed=not cycle.is_current)
    if not cycle.is_current:
        return RunOut(None, "lasts", period_closed=True)
    if not used:
        return RunOut(None, "no_usage")
    pace = used / cycle.elapsed_day_count
    days_left = int(((allocation - used) / pace).to_integral_value(rounding=ROUND_CEILING))
    run_out = cycle.today + timedelta(days=days_left)
    if run_out >= cycle.reset_day:
        return RunOut(None, "lasts")
    return RunOut(run_out, "projected")


# --- People -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberFilters:
    q: str = ""
    team: str = ""
    feature: str = ""
    product: str = ""
    sort: str = "-credits"

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "MemberFilters":
        sort = query.get("sort", "-credits")
        if sort.lstrip("-") not in SORT_KEYS:
            sort = "-credits"
        return cls(
            q=query.get("q", "").strip()[:100],
            team=query.get("team", "") if query.get("team", "").isdigit() else "",
            feature=query.get("feature", "")[:100],
            product=query.get("product", "") if query.get("product", "").isdigit() else "",
            sort=sort,
        )

    @property
    def filters_usage(self) -> bool:
        return bool(self.feature or self.product)

    @property
    def any(self) -> bool:
        return bool(self.q or self.team or self.feature or self.product)


@dataclass
class MemberRow:
    user_id: int | None
    email: str
    name: str
    roles: list[str] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)
    team_id: int | None = None
    team: str = ""
    credits: Decimal = ZERO
    runs: int = 0
    failed_runs: int = 0
    last_activity: datetime | None = None
    # Written once the row is on the page shown, in the subscription's time zone.
    last_activity_iso: str = ""
    last_activity_label: str = ""
    period_credits: Decimal = ZERO
    limit: Decimal | None = None
    limit_scope: str = ""  # "own" or "team"
    limit_used: Decimal = ZERO
    _rank: int = 3

    @property
    def role(self) -> str:
        return ", ".join(self.roles) or "No longer a member"

    @property
    def limit_percent(self) -> Decimal | None:
        return None if self.limit is None else _percent(self.limit_used, self.limit)

    @property
    def limit_remaining(self) -> Decimal | None:
        return None if self.limit is None else max(ZERO, self.limit - self.limit_used)


SORT_KEYS = {
    "member": ("Member", lambda row: row.email.lower()),
    "role": ("Role", lambda row: row._rank),
    "team": ("Team", lambda row: row.team.lower() or None),
    "credits": ("Credits", lambda row: row.credits),
    "limit": ("Limit used", lambda row: row.limit_percent),
    "runs": ("Runs", lambda row: row.runs),
    "last_activity": ("Last activity", lambda row: row.last_activity),
}


@dataclass(frozen=True)
class SortHeader:
    key: str
    label: str
    direction: str  # "ascending", "descending" or "" (not sorted by it)
    next_sort: str
    numeric: bool


@dataclass
class MemberTable:
    """Usage by team member: everyone listed (searched, filtered, sorted), one page shown."""

    page: Page  # the rows shown: one page of the people listed
    keys_row: MemberRow | None  # API keys acting without a user
    filters: MemberFilters
    teams: list[tuple[int, str]]
    features: list[str]
    products: list[tuple[int, str]]
    for_admin: bool  # teams and limits are shown to subscription admins only
    member_count: int  # before search and team filters
    total_credits: Decimal  # of everyone listed, on every page, and the API keys
    active_people: int  # listed people with credits or runs in the range

    @property
    def rows(self) -> list[MemberRow]:
        return self.page.object_list

    @property
    def listed_count(self) -> int:
        return self.page.paginator.count

    @property
    def page_links(self) -> list[int | str]:
        """Page numbers to link to, with ``Paginator.ELLIPSIS`` where some are left out."""
        return list(
            self.page.paginator.get_elided_page_range(self.page.number, on_each_side=2, on_ends=1)
        )

    @property
    def headers(self) -> list[SortHeader]:
        current = self.filters.sort.lstrip("-")
        descending = self.filters.sort.startswith("-")
        numeric = {"credits", "limit", "runs", "last_activity"}
        headers = []
        for key, (label, _) in SORT_KEYS.items():
            if key in ("limit", "team") and not self.for_admin:
                continue
            if key == current:
                direction = "descending" if descending else "ascending"
                next_sort = key if descending else f"-{key}"
            else:
                direction = ""
                next_sort = f"-{key}" if key in numeric else key
            headers.append(SortHeader(key, label, direction, next_sort, key in numeric))
        return headers


def _sorted(rows: list[MemberRow], sort: str) -> list[MemberRow]:
    """Sorted by ``sort``, ties and rows without a value (last either way) by email, so
    that every row has one place and one page."""
    key = SORT_KEYS[sort.lstrip("-")][1]
    by_email = sorted(rows, key=lambda row: row.email.lower())
    present = [row for row in by_email if key(row) is not None]
    missing = [row for row in by_email if key(row) is None]
    present.sort(key=key, reverse=sort.startswith("-"))
    return present + missing


def _page(paginator: Paginator, number: str | int | None) -> Page:
    """The page asked for; a number that is none of its pages (not a number, 0, past the
    end) gives the first page, like a visit without one."""
    try:
        return paginator.page(number or 1)
    except InvalidPage:
        return paginator.page(1)


def member_table(
    *,
    viewer: User,
    subscription: Subscription,
    date_range: DateRange,
    filters: MemberFilters,
    products: Mapping[int, str],
    features: list[str],
    environment: Environment | None = None,
    for_admin: bool = False,
    page_number: str | int | None = None,
) -> MemberTable:
    """Usage by team member: everyone with a role there or usage in the cycle, one page of
    them (``MEMBERS_PER_PAGE``) at a time.

    A fixed number of queries whatever the number of people or events: usage per user (one
    pass over the rollup, summed by PostgreSQL), roles, and for a subscription admin
    (``for_admin``) teams and limits too; each returns one small row per person, team or
    limit, and only the page shown is rendered. Teams and limits are the subscription's
    business: a project manager sees neither. A limit applies to the whole period, so "limit
    used" counts the period's credits, unfiltered.
    """
    rows, period, in_range = _member_usage_rows(date_range, filters)
    rows = rows.visible_to(viewer).filter(subscription=subscription)
    if environment is not None:
        rows = rows.filter(environment=environment)
    usage = (
        rows.filter(period | in_range)
        .order_by()
        .values_list("user_id", "user__email", "user__display_name")
        .annotate(
            range_credits=Sum("credits", filter=in_range),
            range_runs=Sum("runs", filter=in_range),
            range_failed=Sum("failed_runs", filter=in_range),
            last_event=Max("last_event_at", filter=in_range),
            period_credits_sum=Sum("credits", filter=period),
        )
    )
    people: dict[int, MemberRow] = {}
    keys_row = None
    for user_id, email, name, credits, runs, failed, last_event, period_credits in usage:
        row = MemberRow(
            user_id=user_id,
            email=email or "",
            name=name or "",
            credits=_credits(credits),
            runs=runs or 0,
            failed_runs=failed or 0,
            last_activity=last_event,
            period_credits=_credits(period_credits),
        )
        if user_id is None:
            row.email, row.name = "", "API keys acting without a user"
            keys_row = row
        else:
            people[user_id] = row

    memberships = Membership.objects.visible_to(viewer).filter(subscription=subscription)
    if environment is not None:
        # People working there, and the admins' role for those of them who used it.
        memberships = memberships.filter(
            Q(environment=environment) | Q(role=Role.SUBSCRIPTION_ADMIN)
        )
    for (
        user_id,
        email,
        name,
        role,
        environment_id,
        project_name,
        environment_name,
    ) in memberships.order_by("environment__project__name", "environment__name").values_list(
        "user_id",
        "user__email",
        "user__display_name",
        "role",
        "environment_id",
        "environment__project__name",
        "environment__name",
    ):
        row = people.get(user_id)
        if row is None:
            if environment is not None and environment_id != environment.pk:
                continue
            row = people[user_id] = MemberRow(user_id, email, name)
        label = ROLE_LABELS.get(role, role)
        if label not in row.roles:
            row.roles.append(label)
            row.roles.sort(key=lambda text: ROLE_LABEL_RANK.get(text, 3))
        row._rank = min(row._rank, ROLE_RANK.get(role, 3))
        if environment_id:
            row.environments.append(f"{project_name} / {environment_name}")

    teams: dict[int, str] = {}
    if for_admin:
        teams = _apply_teams_and_limits(people, subscription, viewer)

    member_count = len(people)
    listed = list(people.values())
    if not for_admin:
        filters = replace(filters, team="")
    if filters.team:
        listed = [row for row in listed if row.team_id == int(filters.team)]
    if filters.q:
        needle = filters.q.lower()
        listed = [row for row in listed if needle in f"{row.email} {row.name}".lower()]
    if keys_row is not None and (filters.team or filters.q):
        keys_row = None
    total = sum((row.credits for row in listed), keys_row.credits if keys_row else ZERO)
    page = _page(Paginator(_sorted(listed, filters.sort), MEMBERS_PER_PAGE), page_number)
    _write_activity_times([*page.object_list, *([keys_row] if keys_row else [])], subscription)
    return MemberTable(
        page=page,
        keys_row=keys_row,
        filters=filters,
        teams=sorted(teams.items(), key=lambda item: item[1].lower()),
        features=features,
        products=sorted(products.items(), key=lambda item: item[1].lower()),
        for_admin=for_admin,
        member_count=member_count,
        total_credits=_credits(total),
        active_people=sum(1 for row in listed if row.credits or row.runs),
    )


def _member_usage_rows(date_range: DateRange, filters: MemberFilters) -> tuple[QuerySet, Q, Q]:
    """Where the member table's usage comes from: the rollup, the rows that add up to the
    whole period, and those that add up to the range shown (with the filters).

    ``PersonRollup``: the period is each person's monthly row, a range within it their daily
    rows. Only ``DailyUsage`` knows the products and features a person used, so a table
    filtered by either reads it instead (days x products x features rows per person).
    """
    cycle = date_range.cycle
    first, last = date_range.first_day, date_range.last_day
    if filters.filters_usage:
        in_range = Q(day__range=(first, last))
        if filters.feature:
            in_range &= Q(feature=filters.feature)
        if filters.product:
            in_range &= Q(product_id=int(filters.product))
        return DailyUsage.objects, Q(day__range=(cycle.first_day, cycle.last_day)), in_range
    period = Q(grain=RollupGrain.MONTH, day=cycle.first_day)
    if date_range.is_whole_cycle:
        return PersonRollup.objects, period, period
    return PersonRollup.objects, period, Q(grain=RollupGrain.DAY, day__range=(first, last))


def _write_activity_times(rows: list[MemberRow], subscription: Subscription) -> None:
    """Last activity as the table shows it (an ISO time and "23 Nov 2026, 10:41 CET" in the
    subscription's time zone), for the rows shown only."""
    zone = subscription.zone
    for row in rows:
        if row.last_activity is not None:
            local = row.last_activity.astimezone(zone)
            row.last_activity_iso = local.isoformat()
            row.last_activity_label = format_moment(local, zone)


def _apply_teams_and_limits(people, subscription, viewer) -> dict[int, str]:
    """Each person's team, and their own limit or else their team's; "used" is what counts
    against it. Returns the teams' names. Two queries, one small row per team member and
    per limit."""
    team_memberships = TeamMembership.objects.filter(
        subscription=subscription,
        team__in=Team.objects.visible_to(viewer).filter(subscription=subscription),
    ).values_list("team_id", "team__name", "user_id")
    teams: dict[int, str] = {}
    members_of_team: dict[int, list[int]] = defaultdict(list)
    for team_id, team_name, user_id in team_memberships:
        teams[team_id] = team_name
        members_of_team[team_id].append(user_id)
        row = people.get(user_id)
        if row is not None:
            row.team_id, row.team = team_id, team_name

    limits = (
        CreditLimit.objects.visible_to(viewer)
        .filter(subscription=subscription)
        .values_list("user_id", "team_id", "credits")
    )
    user_limits, team_limits = {}, {}
    for user_id, team_id, credits in limits:
        if user_id:
            user_limits[user_id] = credits
        else:
            team_limits[team_id] = credits
    team_used = {
        team_id: _credits(
            sum((people[uid].period_credits for uid in user_ids if uid in people), ZERO)
        )
        for team_id, user_ids in members_of_team.items()
    }
    for row in people.values():
        if row.user_id in user_limits:
            row.limit, row.limit_scope, row.limit_used = (
                user_limits[row.user_id],
                "own",
                row.period_credits,
            )
        elif row.team_id in team_limits:
            row.limit, row.limit_scope, row.limit_used = (
                team_limits[row.team_id],
                "team",
                team_used[row.team_id],
            )
    return teams


# --- Pages ------------------------------------------------------------------------------------


@dataclass
class Notice:
    kind: str  # "info" or "warning"
    text: str


@dataclass
class UsagePage:
    """What every usage page shows about one scope of one subscription."""

    subscription: Subscription
    date_range: DateRange
    usage: CycleUsage
    enabled_products: dict[int, str]
    notices: list[Notice] = field(default_factory=list)

    @property
    def cycle(self) -> Cycle:
        return self.date_range.cycle

    @cached_property
    def range_credits(self) -> Decimal:
        return self.usage.total(self.date_range.first_day, self.date_range.last_day)

    @cached_property
    def range_excess(self) -> Decimal:
        return self.usage.excess(self.date_range.first_day, self.date_range.last_day)

    @cached_property
    def range_runs(self) -> int:
        return self.usage.runs(self.date_range.first_day, self.date_range.last_day)

    @cached_property
    def range_failed_runs(self) -> int:
        return self.usage.failed_runs(self.date_range.first_day, self.date_range.last_day)

    @cached_property
    def period_credits(self) -> Decimal:
        return self.usage.total(self.cycle.first_day, self.cycle.last_day)

    @cached_property
    def average_daily(self) -> Decimal:
        return _per_day(self.range_credits, len(self.date_range.elapsed_days))

    @cached_property
    def active_products(self) -> int:
        return len(
            self.usage.active_product_ids(self.date_range.first_day, self.date_range.last_day)
            - {None}
        )

    @cached_property
    def products(self) -> list[ProductRow]:
        return self.usage.product_rows(self.date_range, self.enabled_products)

    @cached_property
    def chart(self) -> dict:
        return self.usage.chart(self.date_range)

    @cached_property
    def chart_table(self) -> dict:
        """The chart's figures as a table (its accessible fallback): days so far, by product."""
        chart = self.chart
        shown = [index for index, future in enumerate(chart["future"]) if not future]
        return {
            "products": [dataset["label"] for dataset in chart["datasets"]],
            "rows": [
                {
                    "day": chart["days"][index],
                    "title": chart["titles"][index],
                    "values": [dataset["display"][index] for dataset in chart["datasets"]],
                    "total": chart["totals"][index],
                }
                for index in shown
            ],
        }

    @cached_property
    def day_over_day(self) -> list[DayChange]:
        return self.usage.day_over_day(self.date_range)

    @cached_property
    def months(self) -> list[tuple[str, str]]:
        """The current billing period and the twelve before it, for the period selector."""
        months, first_day = [], self.cycle.today.replace(day=1)
        for _ in range(PAST_PERIODS_SHOWN):
            months.append((f"{first_day:%Y-%m}", f"{first_day:%B %Y}"))
            first_day = previous_month_start(first_day)
        return months

    @cached_property
    def day_over_day_chart(self) -> dict:
        changes = self.day_over_day
        return {
            **_day_labels([change.day for change in changes]),
            "totals": [_plain(change.credits) for change in changes],
            "datasets": [
                {
                    "label": "Change from the day before",
                    "values": [
                        None if change.change is None else float(change.change)
                        for change in changes
                    ],
                    "display": [
                        "—" if change.change is None else _signed(change.change)
                        for change in changes
                    ],
                }
            ],
        }


def _signed(value: Decimal) -> str:
    return f"+{_plain(value)}" if value > 0 else _plain(value)


def _enabled_products(subscription: Subscription) -> dict[int, str]:
    return dict(
        Product.objects.filter(enabled_for=subscription).order_by("name").values_list("pk", "name")
    )


def _usage_notices(page: UsagePage, *, scope_label: str) -> None:
    cycle = page.cycle
    if not page.enabled_products:
        page.notices.append(
            Notice(
                "warning",
                f"No AI products are enabled for {page.subscription.name}, so there is no usage "
                "to show and every figure is zero. Usage is recorded once a product is enabled "
                "for the subscription.",
            )
        )
    if cycle.is_current and cycle.today == cycle.first_day:
        page.notices.append(
            Notice(
                "info",
                f"A new billing period started today ({cycle.first_day:%-d %B}) and credits were "
                "reset; figures fill in as usage arrives. Last month is under past billing "
                "periods.",
            )
        )
    if page.enabled_products and not page.usage.cells:
        page.notices.append(Notice("info", f"No usage recorded {scope_label} in this period yet."))


@dataclass
class SubscriptionDashboard(UsagePage):
    subscriptions: list[Subscription] = field(default_factory=list)
    balance: Balance | None = None
    trend: Trend | None = None
    run_out: RunOut | None = None
    periods: list["PastPeriod"] = field(default_factory=list)
    members: MemberTable | None = None

    @property
    def has_team_views(self) -> bool:
        return self.subscription.has_team_views

    plans_with_team_views = PLANS_WITH_TEAM_VIEWS

    @property
    def export_url(self) -> str:
        return export_url("subscription", subscription=self.subscription)


@dataclass(frozen=True)
class PastPeriod:
    month: str
    first_day: date
    credits_used: Decimal
    excess_used: Decimal
    utilisation_percent: Decimal | None


def past_periods(*, viewer: User, subscription: Subscription) -> list[PastPeriod]:
    """One query: the latest billing periods with their counters, newest first.

    Utilisation is against today's base allocation (the allocation is not kept per period).
    """
    periods = (
        BillingPeriod.objects.visible_to(viewer)
        .filter(subscription=subscription)
        .order_by("-start")[:PAST_PERIODS_SHOWN]
    )
    result = []
    for period in periods:
        first_day = local_date(period.start, subscription.zone)
        result.append(
            PastPeriod(
                month=f"{first_day:%Y-%m}",
                first_day=first_day,
                credits_used=period.credits_used,
                excess_used=period.excess_used,
                utilisation_percent=_percent(period.credits_used, subscription.base_allocation),
            )
        )
    return result


def administered_subscriptions(viewer: User) -> list[Subscription]:
    """One query: the subscriptions and sub-accounts ``viewer`` administers."""
    subscriptions = list(
        Subscription.objects.administered_by(viewer).select_related("parent").order_by("name", "pk")
    )
    # Parents first, each followed by its sub-accounts.
    by_parent = defaultdict(list)
    ids = {subscription.pk for subscription in subscriptions}
    for subscription in subscriptions:
        parent = subscription.parent_id if subscription.parent_id in ids else None
        by_parent[parent].append(subscription)
    ordered = []
    for top in by_parent[None]:
        ordered.append(top)
        ordered.extend(by_parent.get(top.pk, []))
    return ordered


def subscription_dashboard(
    *,
    viewer: User,
    subscription: Subscription,
    subscriptions: list[Subscription],
    date_range: DateRange,
    filters: MemberFilters,
    member_page: str | int | None = None,
) -> SubscriptionDashboard:
    """The subscription admin's analytics, in a fixed number of queries (about ten).

    Two of them read rollups: credits per day and product (``ProductRollup``, with last
    period's days for the trend, and the features), and usage per member (``PersonRollup``).
    """
    cycle = date_range.cycle
    rows = ProductRollup.objects.visible_to(viewer).filter(
        subscription=subscription, grain=RollupGrain.DAY
    )
    usage = cycle_usage(
        rows, cycle, earlier=trend_days(cycle), with_features=subscription.has_team_views
    )
    enabled = _enabled_products(subscription)
    page = SubscriptionDashboard(
        subscription=subscription,
        date_range=date_range,
        usage=usage,
        enabled_products=enabled,
        subscriptions=subscriptions,
        balance=balance(subscription=subscription, at=_instant_in(cycle)),
        trend=trend_vs_last_month(usage),
        run_out=projected_run_out(usage, subscription.base_allocation),
        periods=past_periods(viewer=viewer, subscription=subscription),
    )
    if subscription.has_team_views:
        page.members = member_table(
            viewer=viewer,
            subscription=subscription,
            date_range=date_range,
            filters=filters,
            products={**enabled, **usage.product_names},
            features=usage.features,
            for_admin=True,
            page_number=member_page,
        )
    _usage_notices(page, scope_label="for this subscription")
    return page


def _instant_in(cycle: Cycle) -> datetime:
    """An instant inside ``cycle``: today's noon for the current one, else its start."""
    if cycle.is_current:
        return local_midnight(cycle.today, cycle.subscription.zone) + timedelta(hours=12)
    return cycle.start


@dataclass
class EnvironmentDashboard(UsagePage):
    environment: Environment | None = None
    environments: list[Environment] = field(default_factory=list)
    balance: Balance | None = None
    members: MemberTable | None = None

    @property
    def active_users(self) -> int:
        return 0 if self.members is None else self.members.active_people

    @property
    def share_percent(self) -> Decimal | None:
        if self.balance is None:
            return None
        return _percent(self.period_credits, self.balance.used)

    plans_with_team_views = PLANS_WITH_TEAM_VIEWS

    @property
    def export_url(self) -> str:
        return export_url(
            "environment", subscription=self.subscription, environment=self.environment
        )


def managed_environments(viewer: User) -> list[Environment]:
    """One query: where ``viewer`` sees everyone's usage (project manager or admin)."""
    return list(
        Environment.objects.managed_by(viewer)
        .select_related("project__subscription")
        .order_by("project__subscription__name", "project__name", "name")
    )


def environment_dashboard(
    *,
    viewer: User,
    environment: Environment,
    environments: list[Environment],
    date_range: DateRange,
    filters: MemberFilters,
    member_page: str | int | None = None,
) -> EnvironmentDashboard:
    """Everyone's usage in one environment that ``viewer`` manages. Constant queries."""
    subscription = environment.project.subscription
    cycle = date_range.cycle
    rows = DailyUsage.objects.visible_to(viewer).filter(
        subscription=subscription, environment=environment
    )
    usage = cycle_usage(rows, cycle, with_features=subscription.has_team_views)
    enabled = _enabled_products(subscription)
    page = EnvironmentDashboard(
        subscription=subscription,
        date_range=date_range,
        usage=usage,
        enabled_products=enabled,
        environment=environment,
        environments=environments,
        balance=balance(
            subscription=subscription,
            at=_instant_in(cycle),
            environment=environment,
        ),
    )
    if subscription.has_team_views:
        page.members = member_table(
            viewer=viewer,
            subscription=subscription,
            date_range=date_range,
            filters=filters,
            products={**enabled, **usage.product_names},
            features=usage.features,
            environment=environment,
            page_number=member_page,
        )
    _usage_notices(page, scope_label="in this environment")
    return page


@dataclass
class RecentRuns:
    """One page of a person's runs (and adjustments), newest first.

    The one place where a page reads ledger rows: ``RUNS_PER_PAGE + 1`` of them through the
    ledger's (user, timestamp) index, the extra one only saying whether there is an older
    page. There is no COUNT over the ledger: how many runs the range holds comes from the
    rollup (``run_count``; adjustments are not runs).
    """

    events: list[CreditEvent]
    number: int
    has_next: bool
    run_count: int

    def __iter__(self):
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index):
        return self.events[index]

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_other_pages(self) -> bool:
        return self.has_previous or self.has_next

    @property
    def previous_page_number(self) -> int:
        return self.number - 1

    @property
    def next_page_number(self) -> int:
        return self.number + 1


# The largest page whose OFFSET PostgreSQL can hold (a bigint).
_LAST_POSSIBLE_RUNS_PAGE = (2**63 - 1) // RUNS_PER_PAGE


def recent_runs(events: QuerySet, *, page_number: str | int | None, run_count: int) -> RecentRuns:
    """One query (two for a page past the last): the page asked for of ``events``, which
    must be ordered newest first. A number that is none of its pages gives the first."""
    try:
        number = int(page_number or 1)
    except (TypeError, ValueError):
        number = 1
    if not 1 <= number <= _LAST_POSSIBLE_RUNS_PAGE:
        number = 1
    offset = (number - 1) * RUNS_PER_PAGE
    fetched = list(events[offset : offset + RUNS_PER_PAGE + 1])
    if not fetched and number > 1:
        return recent_runs(events, page_number=1, run_count=run_count)
    return RecentRuns(
        events=fetched[:RUNS_PER_PAGE],
        number=number,
        has_next=len(fetched) > RUNS_PER_PAGE,
        run_count=run_count,
    )


@dataclass
class PersonalDashboard(UsagePage):
    person: User | None = None
    environment: Environment | None = None
    balance: Balance | None = None
    runs: RecentRuns | None = None

    @property
    def export_url(self) -> str:
        return export_url("mine", subscription=self.subscription, environment=self.environment)


def personal_dashboard(
    *,
    viewer: User,
    person: User,
    subscription: Subscription,
    environment: Environment | None,
    date_range: DateRange,
    page_number: str | int | None = 1,
    with_limits: bool = True,
) -> PersonalDashboard:
    """One person's usage in a subscription (one environment or all of theirs).

    ``viewer`` is the person themselves, or an admin or project manager looking at a member;
    everything is read through ``viewer``'s scope. ``with_limits`` adds the person's own (and
    their team's) per-period limit; a project manager, who sees one environment of theirs,
    does not get it.
    """
    cycle = date_range.cycle
    rows = DailyUsage.objects.visible_to(viewer).filter(subscription=subscription, user=person)
    events = CreditEvent.objects.visible_to(viewer).filter(subscription=subscription, user=person)
    if environment is not None:
        rows = rows.filter(environment=environment)
        events = events.filter(environment=environment)
    events = (
        events.filter(timestamp__gte=date_range.start, timestamp__lt=date_range.end)
        .select_related("product", "agent", "environment__project")
        .order_by("-timestamp", "-id")
    )
    usage = cycle_usage(rows, cycle)
    page = PersonalDashboard(
        subscription=subscription,
        date_range=date_range,
        usage=usage,
        enabled_products=_enabled_products(subscription),
        person=person,
        environment=environment,
        balance=balance(
            subscription=subscription,
            at=_instant_in(cycle),
            user=person if with_limits else None,
        ),
        runs=recent_runs(
            events,
            page_number=page_number,
            run_count=usage.runs(date_range.first_day, date_range.last_day),
        ),
    )
    _usage_notices(
        page, scope_label="for you" if viewer == person else f"for {person.get_full_name()}"
    )
    return page


@dataclass(frozen=True)
class ScopeChoice:
    """One entry of the member page's selector: all of a subscription, or one environment."""

    subscription: Subscription
    environment: Environment | None
    label: str

    @property
    def value(self) -> str:
        if self.environment is not None:
            return f"environment:{self.environment.public_id}"
        return f"subscription:{self.subscription.pk}"


def personal_scopes(viewer: User) -> list[ScopeChoice]:
    """Two queries: the subscriptions ``viewer`` belongs to and the environments they see."""
    subscriptions = list(Subscription.objects.visible_to(viewer).order_by("name", "pk"))
    environments = list(
        Environment.objects.visible_to(viewer)
        .select_related("project__subscription")
        .order_by("project__name", "name")
    )
    several = len(subscriptions) > 1
    choices = []
    for subscription in subscriptions:
        label = f"All my environments in {subscription.name}" if several else "All my environments"
        choices.append(ScopeChoice(subscription, None, label))
        for environment in environments:
            if environment.project.subscription_id == subscription.pk:
                choices.append(ScopeChoice(subscription, environment, str(environment)))
    return choices
