"""The usage pages: the admin's analytics, a project manager's environments and a member's
own usage, each in a fixed number of queries whatever the data size.

A page states its scope as a ``UsageQuery`` (``reports.usage``); one query returns the credits
per day and product of the whole billing period (``reports.cycle_usage``), the team pages add
the member table (``reports.member_table``), and "recent runs" reads ledger rows one page at a
time through an index, never counted.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cached_property

from django.db.models import QuerySet

from accounts.models import (
    Environment,
    Subscription,
    User,
)
from core.display import format_credits
from credits.models import (
    BillingPeriod,
    CreditEvent,
    Product,
)
from credits.periods import (
    local_date,
    local_midnight,
    previous_month_start,
)
from credits.selectors import Balance, balance

from .catalogue import PLANS_WITH_TEAM_VIEWS
from .costs import NO_COST, Cost, cost, with_currency
from .cycle_usage import (
    CycleUsage,
    DayChange,
    ProductRow,
    RunOut,
    Trend,
    cycle_usage,
    day_labels,
    per_day,
    percent_of,
    projected_run_out,
    trend_days,
    trend_vs_last_month,
)
from .member_table import MemberFilters, MemberTable, member_table
from .timeframes import Cycle, DateRange
from .usage import Sums, UsageQuery

ZERO = Decimal("0.0000")
PERCENT_PLACES = Decimal("0.1")
RUNS_PER_PAGE = 20
PAST_PERIODS_SHOWN = 13
EXPORT_PATH = "/api/v1/exports/credit-usage/"


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

    @property
    def currency(self) -> str | None:
        """What costs are shown in: read with the subscription for its admins
        (``reports.costs.with_currency``); other pages and people show no money."""
        return getattr(self.subscription, "currency", None)

    @cached_property
    def range_cost(self) -> Cost:
        """What the days shown cost: the sum of the products table's rounded rows."""
        return self.usage.cost(self.date_range.first_day, self.date_range.last_day, self.currency)

    @cached_property
    def range_sums(self) -> Sums:
        """Credits, excess, runs and failed runs of the days shown (as the cards show them)."""
        return self.usage.sums(self.date_range.first_day, self.date_range.last_day)

    @property
    def range_credits(self) -> Decimal:
        return self.range_sums.credits

    @cached_property
    def period_credits(self) -> Decimal:
        return self.usage.total(self.cycle.first_day, self.cycle.last_day)

    @cached_property
    def average_daily(self) -> Decimal:
        return per_day(self.range_credits, len(self.date_range.elapsed_days))

    @cached_property
    def active_products(self) -> int:
        return len(
            self.usage.active_product_ids(self.date_range.first_day, self.date_range.last_day)
            - {None}
        )

    @cached_property
    def products(self) -> list[ProductRow]:
        return self.usage.product_rows(self.date_range, self.enabled_products, self.currency)

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
            **day_labels([change.day for change in changes]),
            "totals": [format_credits(change.credits) for change in changes],
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
    return f"+{format_credits(value)}" if value > 0 else format_credits(value)


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

    @cached_property
    def spend(self) -> Cost:
        """What the billing period's usage has cost so far (all of it, whatever the range),
        as one line rounded once, as the period's statement rounds its usage."""
        period = self.usage.sums(self.cycle.first_day, self.cycle.last_day)
        return cost(period.cost, self.currency)

    @cached_property
    def projected_spend(self) -> Cost:
        """The spend so far divided by the elapsed fraction of the period (its elapsed days,
        today counted whole, as the run-out card's pace), rounded once."""
        cycle, spend = self.cycle, self.spend
        if not spend.priced or not cycle.elapsed_day_count:
            return NO_COST
        return cost(spend.amount * self.period_days / cycle.elapsed_day_count, spend.currency)

    @property
    def period_days(self) -> int:
        return (self.cycle.last_day - self.cycle.first_day).days + 1

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
                utilisation_percent=percent_of(period.credits_used, subscription.base_allocation),
            )
        )
    return result


def administered_subscriptions(viewer: User) -> list[Subscription]:
    """One query: the subscriptions and sub-accounts ``viewer`` administers, with the
    currency of their prices (``reports.costs.with_currency``)."""
    subscriptions = list(
        with_currency(Subscription.objects.administered_by(viewer), viewer)
        .select_related("parent")
        .order_by("name", "pk")
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
    query = UsageQuery(
        principal=viewer,
        accounts=[subscription],
        timeframe=date_range.timeframe,
        whole_subscriptions=True,  # only the subscriptions the viewer administers are shown
    )
    usage = cycle_usage(
        query, cycle, earlier=trend_days(cycle), with_features=subscription.has_team_views
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
    _add_members(page, viewer=viewer, filters=filters, page_number=member_page, for_admin=True)
    _usage_notices(page, scope_label="for this subscription")
    return page


def _add_members(page: UsagePage, *, viewer: User, filters, page_number, **scope) -> None:
    """The member table of a team page, on the plans that have one."""
    if page.subscription.has_team_views:
        page.members = member_table(
            viewer=viewer,
            subscription=page.subscription,
            date_range=page.date_range,
            filters=filters,
            products={**page.enabled_products, **page.usage.product_names},
            features=page.usage.features,
            page_number=page_number,
            **scope,
        )


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
        return percent_of(self.period_credits, self.balance.used)

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
    query = UsageQuery(
        principal=viewer,
        accounts=[subscription],
        timeframe=date_range.timeframe,
        narrowed={"environment": environment},
    )
    usage = cycle_usage(query, cycle, with_features=subscription.has_team_views)
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
    _add_members(
        page, viewer=viewer, filters=filters, page_number=member_page, environment=environment
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
    query = UsageQuery(
        principal=viewer,
        accounts=[subscription],
        timeframe=date_range.timeframe,
        narrowed={"user": person, **({} if environment is None else {"environment": environment})},
    )
    events = (
        query.events()
        .select_related("product", "agent", "environment__project")
        .order_by("-timestamp", "-id")
    )
    usage = cycle_usage(query, cycle)
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
            run_count=usage.sums(date_range.first_day, date_range.last_day).runs,
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
