"""Credits per day and product over one billing period: what the usage pages' cards, chart,
day-over-day view and "credits by product" table are cut from, in Python, after one query
(a period has at most 31 days, so the cells are few whatever the volume)."""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from django.db.models import Max

from core.display import format_credits
from core.money import CREDIT_PLACES

from .costs import NO_COST, Cost, cost, rounded_total
from .timeframes import Cycle, DateRange, days_between
from .usage import Sums, UsageQuery, grouped

ZERO = Decimal("0.0000")
PERCENT_PLACES = Decimal("0.1")
CHART_COLOURS = 10  # the palette's size in reports/static/reports/charts.js


def to_credits(value) -> Decimal:
    return (value or ZERO).quantize(CREDIT_PLACES, rounding=ROUND_HALF_UP)


def percent_of(part: Decimal, whole: Decimal) -> Decimal | None:
    if not whole:
        return None
    return (part * 100 / whole).quantize(PERCENT_PLACES, rounding=ROUND_HALF_UP)


def per_day(total: Decimal, days: int) -> Decimal:
    return to_credits(total / days) if days > 0 else ZERO


# --- Credits per day and product --------------------------------------------------------------


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
    cost: Cost = NO_COST


@dataclass(frozen=True)
class DayChange:
    day: date
    credits: Decimal
    change: Decimal | None
    change_percent: Decimal | None

    @property
    def title(self) -> str:
        return day_title(self.day)


OTHER_PRODUCT = "Adjustments and other"


@dataclass
class CycleUsage:
    """Credits per (day, product) over one cycle: the source of cards, chart and tables."""

    cycle: Cycle
    cells: dict[tuple[date, int | None], Sums]
    product_names: dict[int | None, str]
    # What ``cycle_usage`` was asked for beside the cycle's cells, read in the same query:
    # credits per day of an earlier range (the trend's), and the features used in the cycle.
    earlier: dict[date, Decimal] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)

    def _cells(self, first: date, last: date) -> Iterable[tuple[int | None, Sums]]:
        for (day, product_id), cell in self.cells.items():
            if first <= day <= last:
                yield product_id, cell

    def sums(self, first: date, last: date) -> Sums:
        """Everything summed over the days ``first`` to ``last``."""
        return sum((cell for _, cell in self._cells(first, last)), Sums()).quantized()

    def total(self, first: date, last: date) -> Decimal:
        return self.sums(first, last).credits

    def day_totals(self) -> dict[date, Decimal]:
        totals: dict[date, Decimal] = defaultdict(lambda: ZERO)
        for (day, _), cell in self.cells.items():
            totals[day] += cell.credits
        return totals

    def active_product_ids(self, first: date, last: date) -> set[int | None]:
        return {product_id for product_id, cell in self._cells(first, last) if cell.credits}

    def cost(self, first: date, last: date, currency: str | None) -> Cost:
        """What the days cost: each product's cost rounded once, summed, as the "credits by
        product" table adds it up; no cost without a currency."""
        by_product: dict[int | None, Decimal] = defaultdict(lambda: ZERO)
        for product_id, cell in self._cells(first, last):
            by_product[product_id] += cell.cost
        return rounded_total(by_product.values(), currency)

    def product_rows(
        self,
        date_range: DateRange,
        enabled: Mapping[int, str] | None = None,
        currency: str | None = None,
    ) -> list[ProductRow]:
        """The "credits by product" table: enabled products first appear even at zero; each
        row's cost in ``currency`` (none without one)."""
        enabled = enabled or {}
        sums: dict[int | None, Sums] = {product_id: Sums() for product_id in enabled}
        for product_id, cell in self._cells(date_range.first_day, date_range.last_day):
            sums[product_id] = sums.get(product_id, Sums()) + cell
        grand_total = sum((cell.credits for cell in sums.values()), ZERO)
        days = len(date_range.elapsed_days)
        rows = [
            ProductRow(
                product_id=product_id,
                name=self._name(product_id, enabled),
                credits=to_credits(cell.credits),
                average_per_day=per_day(cell.credits, days),
                excess_credits=to_credits(cell.excess_credits),
                runs=cell.runs,
                share_percent=percent_of(cell.credits, grand_total),
                enabled=product_id in enabled,
                cost=cost(cell.cost, currency),
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
            credits = to_credits(totals.get(day))
            previous_day = day - timedelta(days=1)
            if previous_day < self.cycle.first_day:
                changes.append(DayChange(day, credits, None, None))
                continue
            previous = to_credits(totals.get(previous_day))
            changes.append(
                DayChange(
                    day, credits, credits - previous, percent_of(credits - previous, previous)
                )
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
            values = [self.cells.get((day, product_id), Sums()).credits for day in days]
            datasets.append(
                {
                    "label": self._name(product_id, {}),
                    # A product keeps its colour on every page and in every range.
                    "color": -1 if product_id is None else product_id % CHART_COLOURS,
                    "values": [
                        None if day > today else float(value)
                        for day, value in zip(days, values, strict=True)
                    ],
                    "display": [format_credits(value) for value in values],
                }
            )
        totals = self.day_totals()
        return {
            **day_labels(days),
            "totals": [format_credits(totals.get(day, ZERO)) for day in days],
            "future": [day > today for day in days],
            "datasets": datasets,
        }


def day_title(day: date) -> str:
    """A day as the charts' tooltips and tables write it: "Mon 23 Nov 2026"."""
    return f"{day:%a} {day.day} {day:%b %Y}"


def day_labels(days: list[date]) -> dict:
    return {
        "days": [day.isoformat() for day in days],
        "labels": [f"{day.day} {day:%b}" for day in days],
        "titles": [day_title(day) for day in days],
    }


def cycle_usage(
    query: UsageQuery,
    cycle: Cycle,
    *,
    earlier: tuple[date, date] | None = None,
    with_features: bool = False,
) -> CycleUsage:
    """One query: the sums per day and product of ``query``'s daily rollup rows in ``cycle``.

    The same query also brings, when asked, what would otherwise be another pass over the
    rollup: the credits per day of the ``earlier`` range (first and last day, before the
    cycle; the trend's) and, ``with_features``, the features used in the cycle (grouped by
    feature too, then added up here). Either way it returns at most days x products
    (x features) rows, however many events there were.
    """
    dimensions = ["product"] + (["feature"] if with_features else [])
    rows = query.daily_rows(
        query.rollup(*dimensions),
        (cycle.first_day, cycle.last_day),
        *([earlier] if earlier is not None else []),
    )
    groups = grouped(
        rows,
        "day",
        "product_id",
        *(["feature"] if with_features else []),
        # An aggregate, not a grouping key: with the name's text among the keys,
        # PostgreSQL sorted (and spilled to disk) a month of rows instead of hashing them.
        product_name=Max("product__name"),
    )
    cells: dict[tuple[date, int | None], Sums] = {}
    names: dict[int | None, str] = {}
    before: dict[date, Decimal] = defaultdict(lambda: ZERO)
    features: set[str] = set()
    for row, sums in groups:
        day, product_id = row["day"], row["product_id"]
        if day < cycle.first_day:
            before[day] += sums.credits
            continue
        cells[day, product_id] = cells.get((day, product_id), Sums()) + sums
        if product_id is not None:
            names[product_id] = row["product_name"]
        if row.get("feature"):
            features.add(row["feature"])
    return CycleUsage(
        cycle=cycle,
        cells={key: cell.quantized() for key, cell in cells.items()},
        product_names=names,
        earlier={day: to_credits(total) for day, total in before.items()},
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
        return percent_of(self.this_period - self.last_period, self.last_period)

    @property
    def direction(self) -> str:
        if self.this_period == self.last_period:
            return "flat"
        return "up" if self.this_period > self.last_period else "down"


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
        last_period=to_credits(last_period),
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
    for day in days_between(cycle.first_day, cycle.last_elapsed_day):
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
