"""Simulated AI usage for the demo: months of believable ledger rows that respect every limit.

Each month asks for a share of the base allocation that grows over the year (with holidays
and a busy month); each day gets its part of that by weekday. Runs are drawn from the people
and API keys of the subscription, then charged in time order against the same caps the
recording service enforces: a run that would cross the period's cap (the base allocation, plus
the excess allowance in soft mode), a user's limit or a team's limit is refused and not
stored. Credits beyond the base allocation are recorded as ``excess_credits``.
"""

import random
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import accumulate

from django.db import connection
from django.db.models import Max

from accounts.models import ApiKey, Membership, Subscription, TeamMembership, User
from core.money import CREDIT_PLACES
from credits.billing import period_for
from credits.bulk import (
    DERIVED_TABLES,
    copy_rows,
    derive_from_ledger,
    foreign_keys_checked_once,
)
from credits.ledger_columns import LEDGER_COLUMNS
from credits.models import BillingPeriod, CreditEvent, CreditLimit, ThresholdAlert
from credits.periods import local_date, month_bounds, next_month_start
from credits.pricing import prices_of
from credits.recording import thresholds_crossed

from .demo_world import AGENTS, API_KEYS, PEOPLE, DemoWorld, SubscriptionSpec, UsageShape

# The ledger's columns and its money, in the order ``LedgerSimulation._event`` gives them.
SEEDED_COLUMNS = (*LEDGER_COLUMNS, "grant_credits", "cost")

FAILURE_RATE = 0.03
WEEKDAY_WEIGHTS = (1.0, 1.1, 1.05, 1.0, 0.85, 0.15, 0.08)  # Monday first
HOLIDAY_MONTHS = {7: 0.9, 8: 0.75, 12: 0.8}
PEAK_UTILISATION = 1.5
DEFAULT_MODEL_SHARE = 0.75
PRIMARY_ENVIRONMENT_SHARE = 0.7
CALIBRATION_RUNS = 2000
LEDGER = CreditEvent._meta.db_table


@dataclass(frozen=True)
class ModelProfile:
    input_rate: Decimal  # credits per 1,000 input tokens
    output_rate: Decimal  # credits per 1,000 output tokens
    first_token_ms: int
    ms_per_output_token: float


MODELS = {
    "gpt-5": ModelProfile(Decimal("1.25"), Decimal(10), 900, 12),
    "gpt-5-mini": ModelProfile(Decimal("0.25"), Decimal(2), 350, 7),
    "claude-sonnet-4-5": ModelProfile(Decimal(3), Decimal(15), 750, 14),
    "claude-haiku-4-5": ModelProfile(Decimal(1), Decimal(5), 300, 6),
    "gemini-2.5-pro": ModelProfile(Decimal("1.25"), Decimal(10), 800, 12),
    "gemini-2.5-flash": ModelProfile(Decimal("0.3"), Decimal("2.5"), 250, 5),
}


@dataclass(frozen=True)
class ProductProfile:
    features: tuple[str, ...]
    input_tokens: int  # median per run
    output_tokens: int
    models: tuple[str, ...]  # for runs without an agent; the first is the product's default
    agent_share: float  # how many runs go through one of the subscription's agents
    people_weight: int  # how often people use it
    key_weight: int  # how often API keys use it


PRODUCT_PROFILES = {
    "ai-agent": ProductProfile(
        ("chat", "generate-content", "summarize"),
        1800,
        500,
        ("gpt-5", "gpt-5-mini", "claude-sonnet-4-5"),
        agent_share=0.6,
        people_weight=45,
        key_weight=0,
    ),
    "expert-agents": ProductProfile(
        ("content-audit", "seo-review", "brand-check"),
        4000,
        900,
        ("gpt-5",),
        agent_share=1.0,
        people_weight=8,
        key_weight=30,
    ),
    "writing-assistant": ProductProfile(
        ("rewrite", "improve-writing", "change-tone", "generate-text"),
        800,
        420,
        ("gpt-5-mini", "claude-haiku-4-5"),
        agent_share=0.0,
        people_weight=32,
        key_weight=0,
    ),
    "translation": ProductProfile(
        ("translate", "review-translation"),
        1100,
        1250,
        ("gemini-2.5-pro", "gpt-5-mini"),
        agent_share=0.0,
        people_weight=15,
        key_weight=10,
    ),
    "api": ProductProfile(
        ("completion", "classification", "extraction"),
        1500,
        300,
        ("gpt-5-mini", "gpt-5", "gemini-2.5-flash"),
        agent_share=0.0,
        people_weight=0,
        key_weight=70,
    ),
}

# Token multipliers (input, output) and how likely the next run continues the same session.
AGENT_TYPE_TOKENS = {"single_task": (1.0, 1.0), "multi_step": (2.0, 1.5), "chat": (1.3, 0.8)}
SESSION_CONTINUES = {"single_task": 0.0, "multi_step": 0.6, "chat": 0.75, "": 0.35}


@dataclass(frozen=True)
class Actor:
    """Who runs AI operations: a user in the environments they work in, or an API key."""

    user_id: int | None
    api_key_id: str | None
    environment_ids: tuple[int, ...]
    weight: float
    team_id: int | None = None
    active_until: date | None = None


@dataclass(frozen=True)
class AgentRef:
    id: int
    agent_type: str
    model: str
    product: str
    feature: str
    created_on: date  # the local day its creator added it: it runs from the next day on


@dataclass(frozen=True)
class LedgerPlan:
    subscription: Subscription
    usage: UsageShape
    periods: dict[date, BillingPeriod]  # keyed by the local first day of the month
    people: tuple[Actor, ...]
    api_keys: tuple[Actor, ...]
    agents: tuple[AgentRef, ...]
    product_ids: dict[str, int]  # slug -> id, enabled products only
    user_limits: dict[int, Decimal]
    team_limits: dict[int, Decimal]
    scale: Decimal  # fraction of the runs to draw; each carries 1/scale of the credits
    now: datetime


@dataclass(slots=True)
class Run:
    """A drawn AI operation, before the limits decide whether it is recorded."""

    timestamp: datetime
    actor: Actor
    environment_id: int
    product: str
    agent: AgentRef | None
    model: str
    feature: str
    input_tokens: int
    output_tokens: int
    latency_ms: int | None
    failed: bool
    credits: Decimal


@dataclass(frozen=True)
class SeededLedger:
    events: int
    refused: int
    periods: int
    crossings: list[ThresholdAlert]  # the thresholds the usage crossed, oldest first


def seed_ledger(
    world: DemoWorld,
    spec: SubscriptionSpec,
    *,
    months: int,
    scale: Decimal,
    now: datetime,
    rng: random.Random,
) -> SeededLedger:
    """Simulate a subscription's usage and store its ledger rows (with ``COPY``), the API
    keys' last use and the alerts the usage crossed, marked as sent at the time.

    Rollups and counters are left to ``derive_seeded_ledgers``, once for every subscription
    seeded in the run.
    """
    subscription = world.subscriptions[spec.name]
    plan = ledger_plan(world, spec, months=months, scale=scale, now=now)
    simulation = LedgerSimulation(plan, rng)
    with connection.cursor() as cursor:
        inserted = copy_rows(cursor, LEDGER, SEEDED_COLUMNS, simulation.events())
    record_api_key_use(subscription)
    crossings = record_sent_alerts(subscription, simulation.charges.crossings)
    return SeededLedger(
        events=inserted,
        refused=simulation.refused,
        periods=len(plan.periods),
        crossings=crossings,
    )


@contextmanager
def ledger_load() -> Iterator[None]:
    """Around the ``seed_ledger`` and ``derive_seeded_ledgers`` calls of a run: the ledger and
    what is derived from it are loaded without foreign keys, which are put back (and checked)
    once, at the end (``credits.bulk.foreign_keys_checked_once``)."""
    tables = [LEDGER, *DERIVED_TABLES]
    with connection.cursor() as cursor, foreign_keys_checked_once(cursor, tables):
        yield


def derive_seeded_ledgers(subscriptions: list[Subscription]) -> None:
    """Rollups and the period, user, team and key counters of the freshly seeded subscriptions,
    from their ledgers, in set-based SQL: the counters equal the ledger exactly."""
    with connection.cursor() as cursor:
        derive_from_ledger(cursor, [subscription.pk for subscription in subscriptions])


def ledger_plan(
    world: DemoWorld, spec: SubscriptionSpec, *, months: int, scale: Decimal, now: datetime
) -> LedgerPlan:
    subscription = world.subscriptions[spec.name]
    periods = open_periods(subscription=subscription, months=months, now=now)
    limits = CreditLimit.objects.filter(subscription=subscription)
    return LedgerPlan(
        subscription=subscription,
        usage=spec.usage,
        periods=periods,
        people=people_actors(world, subscription),
        api_keys=api_key_actors(world, spec, first_day=min(periods), now=now),
        agents=tuple(
            AgentRef(
                id=world.agents[agent.subscription, agent.name].pk,
                agent_type=agent.agent_type,
                model=agent.model,
                product=agent.product,
                feature=agent.feature,
                created_on=local_date(
                    world.agents[agent.subscription, agent.name].created_at, subscription.zone
                ),
            )
            for agent in AGENTS
            if agent.subscription == spec.name
        ),
        product_ids={slug: world.products[slug].pk for slug in spec.products},
        user_limits={limit.user_id: limit.credits for limit in limits if limit.user_id},
        team_limits={limit.team_id: limit.credits for limit in limits if limit.team_id},
        scale=scale,
        now=now,
    )


def people_actors(world: DemoWorld, subscription: Subscription) -> tuple[Actor, ...]:
    """Everyone with AI access (a member or project manager role) in the subscription."""
    activity = {person.email: person.activity for person in PEOPLE}
    environments: dict[User, list[int]] = {}
    memberships = (
        Membership.objects.filter(subscription=subscription, environment__isnull=False)
        .select_related("user")
        .order_by("pk")  # the order of the specs: a person's first environment is their main one
    )
    for membership in memberships:
        environments.setdefault(membership.user, []).append(membership.environment_id)
    team_of_user = dict(
        TeamMembership.objects.filter(subscription=subscription).values_list("user_id", "team_id")
    )
    return tuple(
        Actor(
            user_id=user.pk,
            api_key_id=None,
            environment_ids=tuple(environment_ids),
            weight=activity.get(user.email, 0.0),
            team_id=team_of_user.get(user.pk),
        )
        for user, environment_ids in sorted(environments.items(), key=lambda item: item[0].email)
        if activity.get(user.email)
    )


def api_key_actors(
    world: DemoWorld, spec: SubscriptionSpec, *, first_day: date, now: datetime
) -> tuple[Actor, ...]:
    subscription = world.subscriptions[spec.name]
    all_environments = tuple(
        environment.pk
        for (subscription_name, _), environment in world.environments.items()
        if subscription_name == spec.name
    )
    history = local_date(now, subscription.zone) - first_day
    actors = []
    for key_spec in API_KEYS:
        if key_spec.subscription != spec.name:
            continue
        api_key = world.api_keys[spec.name, key_spec.name]
        actors.append(
            Actor(
                user_id=None,
                api_key_id=api_key.pk,
                environment_ids=(api_key.environment_id,)
                if api_key.environment_id
                else all_environments,
                weight=key_spec.activity,
                active_until=first_day + history * key_spec.active_until
                if key_spec.active_until < 1
                else None,
            )
        )
    return tuple(actors)


def open_periods(*, subscription: Subscription, months: int, now: datetime) -> dict:
    """The billing periods of the last ``months`` full months and the current one."""
    zone = subscription.zone
    first_day = local_date(now, zone).replace(day=1)
    for _ in range(months):
        first_day = (first_day - timedelta(days=1)).replace(day=1)
    periods = {}
    while first_day <= local_date(now, zone):
        start = month_bounds(first_day, zone).start
        periods[first_day] = period_for(subscription=subscription, instant=start)
        first_day = next_month_start(first_day)
    return periods


class Charges:
    """The counters of the simulated recording service, with its refusal rules and alerts."""

    def __init__(self, plan: LedgerPlan):
        self.subscription = plan.subscription
        self.base_allocation = plan.subscription.base_allocation
        self.credit_cap = plan.subscription.credit_cap
        self.user_limits = plan.user_limits
        self.team_limits = plan.team_limits
        self.period_used: dict[int, Decimal] = defaultdict(Decimal)
        self.user_used: dict[tuple[int, int], Decimal] = defaultdict(Decimal)
        self.team_used: dict[tuple[int, int], Decimal] = defaultdict(Decimal)
        self.crossings: list[tuple[int, str, datetime]] = []  # (period id, threshold, when)

    def charge(self, period_id: int, run: Run) -> Decimal | None:
        """Charge the run and return its excess credits, or ``None`` when it is refused."""
        user_id, team_id, credits = run.actor.user_id, run.actor.team_id, run.credits
        used = self.period_used[period_id]
        after = used + credits
        if (
            after > self.credit_cap
            or not _within(self.user_used, self.user_limits, period_id, user_id, credits)
            or not _within(self.team_used, self.team_limits, period_id, team_id, credits)
        ):
            return None
        self.period_used[period_id] = after
        if user_id:
            self.user_used[period_id, user_id] += credits
        if team_id:
            self.team_used[period_id, team_id] += credits
        before, now = (used, self._excess(used)), (after, self._excess(after))
        for threshold in thresholds_crossed(self.subscription, before=before, after=now):
            self.crossings.append((period_id, threshold, run.timestamp))
        return now[1] - before[1]

    def _excess(self, used: Decimal) -> Decimal:
        return max(Decimal(0), used - self.base_allocation)


def _within(counters: dict, limits: dict, period_id: int, owner_id, credits: Decimal) -> bool:
    limit = limits.get(owner_id)
    return limit is None or counters[period_id, owner_id] + credits <= limit


class LedgerSimulation:
    """Draws the runs of one subscription day by day and yields the ledger rows to store."""

    def __init__(self, plan: LedgerPlan, rng: random.Random):
        self.plan = plan
        self.rng = rng
        self.zone = plan.subscription.zone
        self.credit_multiplier = Decimal(1) / plan.scale
        self.charges = Charges(plan)
        self.sessions: dict[tuple, tuple[date, str]] = {}
        self.refused = 0
        self.people_weights = _cumulative([actor.weight for actor in plan.people])
        self.products_for_people = self._weighted_products("people_weight")
        self.products_for_keys = self._weighted_products("key_weight")
        self.agents_by_day: dict[date, dict[str, list[AgentRef]]] = {}
        self.calibrations: dict[tuple[AgentRef, ...], float] = {}
        self.prices = prices_of(plan.subscription)

    def _agents_by_product(self, day: date) -> dict[str, list[AgentRef]]:
        """The agents that exist on ``day`` (created before it), by product."""
        agents = self.agents_by_day.get(day)
        if agents is None:
            agents = self.agents_by_day[day] = defaultdict(list)
            for agent in self.plan.agents:
                if agent.created_on < day:
                    agents[agent.product].append(agent)
        return agents

    def events(self) -> Iterator[tuple]:
        for first_day, period in sorted(self.plan.periods.items()):
            month_runs = self._runs_per_allocation(first_day) * self._utilisation(first_day)
            for day, share in self._day_shares(first_day):
                count = int(month_runs * share + self.rng.random())  # rounds to the expectation
                for run in sorted(self._draw_runs(day, count), key=lambda run: run.timestamp):
                    if run.timestamp > self.plan.now:
                        continue
                    excess = self.charges.charge(period.pk, run)
                    if excess is None:
                        self.refused += 1
                    else:
                        yield self._event(run, period, excess)

    def _weighted_products(self, weight_name: str) -> tuple[list[str], list[float]]:
        slugs = [
            slug
            for slug in self.plan.product_ids
            if getattr(PRODUCT_PROFILES[slug], weight_name) > 0
        ]
        weights = [getattr(PRODUCT_PROFILES[slug], weight_name) for slug in slugs]
        return slugs, _cumulative(weights)

    def _runs_per_allocation(self, first_day: date) -> float:
        """How many runs of this subscription's mix use up one base allocation in the month
        of ``first_day`` (calibrated on a sample, so that the monthly totals follow the usage
        shape at any scale). The mix changes as agents are added: one sample per set of
        agents."""
        agents = tuple(
            agent for agents in self._agents_by_product(first_day).values() for agent in agents
        )
        if agents not in self.calibrations:
            sample = self._draw_runs(first_day, CALIBRATION_RUNS)
            credits_per_run = sum(run.credits for run in sample) / CALIBRATION_RUNS
            self.calibrations[agents] = (
                float(self.plan.subscription.base_allocation / credits_per_run)
                if credits_per_run
                else 0.0
            )
        return self.calibrations[agents]

    def _utilisation(self, first_day: date) -> float:
        """The share of the base allocation that the month's demand asks for."""
        usage = self.plan.usage
        months = sorted(self.plan.periods)
        index = months.index(first_day)
        progress = index / max(len(months) - 1, 1)
        utilisation = usage.utilisation_first_month + progress * (
            usage.utilisation_last_month - usage.utilisation_first_month
        )
        if usage.peak_months_ago is not None and index == len(months) - 1 - usage.peak_months_ago:
            utilisation = PEAK_UTILISATION  # a launch month: no holiday slows it down
        else:
            utilisation *= HOLIDAY_MONTHS.get(first_day.month, 1.0)
        return utilisation * self.rng.uniform(0.92, 1.08)

    def _day_shares(self, first_day: date) -> Iterator[tuple[date, float]]:
        """Each day's share of its month's runs up to today, working days weighing most."""
        days = []
        day = first_day
        while day.month == first_day.month:
            days.append(day)
            day += timedelta(days=1)
        weights = [WEEKDAY_WEIGHTS[day.weekday()] * self.rng.lognormvariate(0, 0.2) for day in days]
        total_weight = sum(weights)
        today = local_date(self.plan.now, self.zone)
        for day, weight in zip(days, weights, strict=True):
            if day <= today:
                yield day, weight / total_weight

    def _draw_runs(self, day: date, count: int) -> list[Run]:
        api_keys = [
            key for key in self.plan.api_keys if key.active_until is None or day <= key.active_until
        ]
        key_weights = _cumulative([key.weight for key in api_keys])
        runs = []
        for _ in range(count):
            if api_keys and (
                not self.plan.people or self.rng.random() < self.plan.usage.api_key_share
            ):
                actor = self.rng.choices(api_keys, cum_weights=key_weights)[0]
                runs.append(self._draw_run(day, actor, self.products_for_keys))
            else:
                actor = self.rng.choices(self.plan.people, cum_weights=self.people_weights)[0]
                runs.append(self._draw_run(day, actor, self.products_for_people))
        return runs

    def _draw_run(self, day: date, actor: Actor, products: tuple[list[str], list[float]]) -> Run:
        rng = self.rng
        slugs, cum_weights = products
        product = rng.choices(slugs, cum_weights=cum_weights)[0]
        profile = PRODUCT_PROFILES[product]
        agents = self._agents_by_product(day)[product]
        agent = rng.choice(agents) if agents and rng.random() < profile.agent_share else None
        if agent:
            model, feature = agent.model, agent.feature
        else:
            model = (
                profile.models[0]
                if rng.random() < DEFAULT_MODEL_SHARE
                else rng.choice(profile.models)
            )
            feature = rng.choice(profile.features)
        input_scale, output_scale = AGENT_TYPE_TOKENS[agent.agent_type] if agent else (1.0, 1.0)
        input_tokens = int(profile.input_tokens * input_scale * rng.lognormvariate(0, 0.55))
        output_tokens = int(profile.output_tokens * output_scale * rng.lognormvariate(0, 0.6))
        failed = rng.random() < FAILURE_RATE
        if failed:
            output_tokens = 0  # a failed run is charged for what it read, nothing more
        return Run(
            timestamp=self._draw_time(day, actor),
            actor=actor,
            environment_id=self._draw_environment(actor),
            product=product,
            agent=agent,
            model=model,
            feature=feature,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=self._draw_latency(actor, agent, model, output_tokens, failed),
            failed=failed,
            credits=self._credits(model, input_tokens, output_tokens),
        )

    def _draw_environment(self, actor: Actor) -> int:
        """People work mostly in their first environment."""
        if self.rng.random() < PRIMARY_ENVIRONMENT_SHARE:
            return actor.environment_ids[0]
        return self.rng.choice(actor.environment_ids)

    def _draw_time(self, day: date, actor: Actor) -> datetime:
        """Office hours in the subscription's time zone for people; any hour for API keys."""
        rng = self.rng
        if actor.api_key_id:
            hour = rng.uniform(0, 24)
        else:
            hour = rng.gauss(10.5, 1.6) if rng.random() < 0.5 else rng.gauss(14.5, 1.8)
            hour = min(max(hour, 6.0), 21.9)
        seconds = min(int(hour * 3600), 86_399)
        local = time(seconds // 3600, seconds // 60 % 60, seconds % 60, rng.randrange(1_000_000))
        return datetime.combine(day, local, tzinfo=self.zone).astimezone(UTC)

    def _draw_latency(
        self, actor: Actor, agent: AgentRef | None, model: str, output_tokens: int, failed: bool
    ) -> int | None:
        rng = self.rng
        if actor.api_key_id and rng.random() < 0.1:
            return None  # some integrations do not report latency
        if failed:
            timed_out = rng.random() < 0.4
            return 30_000 + rng.randrange(30_000) if timed_out else 120 + rng.randrange(1_500)
        profile = MODELS[model]
        steps = 3 if agent and agent.agent_type == "multi_step" else 1
        latency = profile.first_token_ms + output_tokens * profile.ms_per_output_token
        return max(50, int(latency * steps * rng.lognormvariate(0, 0.3)))

    def _credits(self, model: str, input_tokens: int, output_tokens: int) -> Decimal:
        profile = MODELS[model]
        tokens_cost = input_tokens * profile.input_rate + output_tokens * profile.output_rate
        return (tokens_cost / 1000 * self.credit_multiplier).quantize(CREDIT_PLACES)

    def _session_id(self, run: Run) -> str:
        day = local_date(run.timestamp, self.zone)
        key = (run.actor, run.agent.id if run.agent else run.product)
        continues = SESSION_CONTINUES[run.agent.agent_type if run.agent else ""]
        current = self.sessions.get(key)
        if current and current[0] == day and self.rng.random() < continues:
            return current[1]
        session_id = f"ses_{self.rng.getrandbits(64):016x}"
        self.sessions[key] = (day, session_id)
        return session_id

    def _event(self, run: Run, period: BillingPeriod, excess: Decimal) -> tuple:
        """The ledger row of a charged run, in the order of ``SEEDED_COLUMNS``: no grant is
        usable before the seed's moment, so its credits are base and excess, priced as the
        recording service prices them."""
        terms = self.prices.at(run.timestamp)
        cost = Decimal(0) if terms is None else terms.cost(base=run.credits - excess, excess=excess)
        return (
            run.timestamp,
            run.timestamp,  # recorded as it happened: each month's statement holds its own
            CreditEvent.Kind.USAGE.value,
            self.plan.subscription.pk,
            period.pk,
            run.environment_id,
            run.actor.user_id,
            run.actor.api_key_id,
            self.plan.product_ids[run.product],
            run.agent.id if run.agent else None,
            run.model,
            run.feature,
            run.credits,
            excess,
            run.input_tokens,
            run.output_tokens,
            run.latency_ms,
            (CreditEvent.Status.FAILED if run.failed else CreditEvent.Status.SUCCEEDED).value,
            self._session_id(run),
            "",
            "",
            Decimal(0),
            cost,
        )


def record_api_key_use(subscription: Subscription) -> None:
    last_uses = (
        CreditEvent.objects.filter(subscription=subscription, api_key__isnull=False)
        .values("api_key_id")
        .annotate(last_used_at=Max("timestamp"))
        .order_by()
    )
    for row in last_uses:
        ApiKey.objects.filter(pk=row["api_key_id"]).update(last_used_at=row["last_used_at"])


def record_sent_alerts(subscription: Subscription, crossings: list) -> list[ThresholdAlert]:
    """The thresholds the usage crossed, as alerts whose email went out at the time."""
    alerts = []
    for period_id, threshold, crossed_at in crossings:
        alert = ThresholdAlert.objects.create(
            subscription=subscription, period_id=period_id, threshold=threshold
        )
        # crossed_at is set on creation (auto_now_add): backdate it with the email's time.
        ThresholdAlert.objects.filter(pk=alert.pk).update(
            crossed_at=crossed_at, notified_at=crossed_at
        )
        alert.crossed_at = alert.notified_at = crossed_at
        alerts.append(alert)
    return alerts


def _cumulative(weights: list[float]) -> list[float]:
    return list(accumulate(weights))
