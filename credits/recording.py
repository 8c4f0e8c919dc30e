"""Recording credit use: the one place that writes the ledger, its counters and its rollups.

One request is one transaction, whether it carries one event or a batch of a thousand (see
DESIGN-NOTES, "Recording an event"); every step is one statement for all of its events:

1. read, in one statement (plain rows, no ORM query to build), the keys' first outcomes
   (a replay is answered first, whatever else changed since) and the environments, products
   and members the API key may use, each distinct value once; resolve each event against them;
2. claim the idempotency keys (``INSERT ... ON CONFLICT DO NOTHING``): a replay with the
   same payload returns the first event, another payload is a conflict; the same statement
   reads the events' periods, agents and prices;
3. charge the period counters with conditional updates that check and add in one statement,
   in a fixed order (subscription, team, user, API key) so that concurrent charges cannot
   deadlock (``charging``);
4. insert the ledger rows, point their keys at them and upsert every rollup, in one
   statement (``ledger.add_to_ledger``);
5. record each threshold crossed as a unique row and queue its email after commit.

Each event is accepted or refused on its own, in order. A lone event's refusal rolls its
transaction back; in a batch, a refused event's key claim is released and the others commit.
"""

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Prefetch
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from psycopg import sql

from accounts.models import (
    ApiKey,
    Environment,
    Membership,
    Role,
    Subscription,
    TeamMembership,
    User,
)
from core import metrics
from core.errors import DomainError
from core.money import CREDIT_PLACES

from . import errors
from .billing import period_for
from .charging import Charge, add_to_counters, charge
from .ledger import GENERIC_PLANS, add_to_ledger
from .ledger_columns import AS_SENT
from .models import (
    Agent,
    BillingPeriod,
    CreditEvent,
    IdempotencyRecord,
    PlanPrice,
    Product,
    SubscriptionPrice,
    TeamPeriodUsage,
    ThresholdAlert,
    UserPeriodUsage,
)
from .periods import Bounds, period_bounds
from .pricing import PriceList, price_at
from .rollups import add_to_rollups

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    """One AI operation as the API received it, already type-checked."""

    idempotency_key: str
    environment: UUID
    product: str
    credits: Decimal
    timestamp: datetime | None = None
    user: str | None = None
    feature: str = ""
    agent: str | None = None
    agent_type: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: int | None = None
    status: str = CreditEvent.Status.SUCCEEDED
    session_id: str = ""

    def fingerprint(self) -> str:
        """A stable hash of the payload, to tell a replay from a reused key."""
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        fields["credits"] = str(self.credits.quantize(CREDIT_PLACES))
        fields["environment"] = str(self.environment)
        fields["timestamp"] = self.timestamp.isoformat() if self.timestamp else None
        fields["user"] = self.user.lower() if self.user else None
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Recorded:
    event: CreditEvent
    created: bool  # False for an idempotent replay


Outcome = Recorded | DomainError


def record_usage(*, api_key: ApiKey, usage: Usage, now: datetime | None = None) -> Recorded:
    """Record one event for the key's subscription, or raise why it was refused."""
    (outcome,) = record_batch(api_key=api_key, usages=[usage], now=now)
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def record_batch(
    *, api_key: ApiKey, usages: list[Usage], now: datetime | None = None
) -> list[Outcome]:
    """Record events in order, each accepted or refused on its own; one outcome per usage."""
    if not usages:
        return []
    started = time.perf_counter()
    outcomes = _record_in_rounds(api_key, usages, now or timezone.now())
    metrics.RECORDING_SECONDS.labels(request="event" if len(usages) == 1 else "batch").observe(
        time.perf_counter() - started
    )
    _count(outcomes)
    return outcomes


def _record_in_rounds(api_key: ApiKey, usages: list[Usage], now: datetime) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(usages)
    waiting = list(range(len(usages)))
    while waiting:
        # A key repeated within the batch is settled after its first use has committed: it is
        # then a replay (or a conflict), as if it had come in a later request.
        seen, rounds_events, waiting_next = set(), [], []
        for index in waiting:
            key = usages[index].idempotency_key
            (waiting_next if key in seen else rounds_events).append(index)
            seen.add(key)
        _record_round(api_key, [(index, usages[index]) for index in rounds_events], outcomes, now)
        waiting = waiting_next
    return outcomes


def _count(outcomes: list[Outcome]) -> None:
    """The events recorded, replayed and refused (by code), for ``/metrics``."""
    created = replayed = 0
    refused = []
    for outcome in outcomes:
        if isinstance(outcome, DomainError):
            refused.append(outcome.code)
        elif outcome.created:
            created += 1
        else:
            replayed += 1
    if created:  # each count is a locked write to a shared file: none for nothing
        metrics.EVENTS_RECORDED.inc(created)
    if replayed:
        metrics.EVENTS_REPLAYED.inc(replayed)
    if refused:
        metrics.count_refusals(refused)


@dataclass
class _Pending:
    """An event that passed every check that needs no lock, on its way to the ledger."""

    index: int
    usage: Usage
    fingerprint: str
    timestamp: datetime
    environment: Environment
    user: User | None
    product: Product
    bounds: Bounds  # of the event's billing period, whose row is found in the transaction
    period: BillingPeriod | None = None
    agent: Agent | None = None


def _record_round(api_key: ApiKey, usages: list[tuple[int, Usage]], outcomes: list, now) -> None:
    subscription = api_key.subscription
    fingerprints = {index: usage.fingerprint() for index, usage in usages}
    found = _Found.read(api_key, [usage for _, usage in usages])
    replays = _Replays(subscription, found.records)
    resolver = _Resolver(api_key, found, now)
    pending = []
    for index, usage in usages:
        try:
            replay = replays.of(usage.idempotency_key, fingerprints[index])
            if replay is not None:
                outcomes[index] = replay
            else:
                pending.append(resolver.resolve(index, usage, fingerprints[index]))
        except DomainError as refusal:
            outcomes[index] = refusal
    if not pending:
        return
    try:
        taken = _write(api_key, pending, outcomes)
    except DomainError as refusal:  # the round's only event was refused
        outcomes[pending[0].index] = refusal
        taken = []
    _note_caps_reached(subscription, pending, outcomes)
    if taken:
        # Another request claimed these keys between our check and our claim, and committed.
        late = _Replays(
            subscription, _records(subscription, [i.usage.idempotency_key for i in taken])
        )
        for item in taken:
            try:
                outcomes[item.index] = late.of(
                    item.usage.idempotency_key, item.fingerprint
                ) or errors.IdempotencyConflict(  # the key's event was archived
                    idempotency_key=item.usage.idempotency_key
                )
            except DomainError as refusal:
                outcomes[item.index] = refusal


@transaction.atomic
def _write(api_key: ApiKey, pending: list[_Pending], outcomes: list) -> list[_Pending]:
    """Claim, charge and store the pending events; return those whose key was taken."""
    subscription = api_key.subscription
    claim = _claim(subscription, pending)
    taken = [item for item in pending if item.usage.idempotency_key not in claim.keys]
    pending = [item for item in pending if item.usage.idempotency_key in claim.keys]
    _open_periods(subscription, pending, claim.periods)
    _find_agents_by_id(pending, claim.agents, outcomes)
    charges = {
        item.index: Charge(
            period=item.period,
            user=item.user,
            credits=item.usage.credits,
            timestamp=item.timestamp,
            api_key=api_key,
        )
        for item in pending
        if outcomes[item.index] is None
    }
    moves = {}
    if charges:
        alone = len(pending) == 1 and not taken  # a refusal may roll everything back
        moves = charge(subscription=subscription, charges=list(charges.values()), alone=alone)
    accepted, refused = [], []
    for item in pending:
        refusal = outcomes[item.index] or charges[item.index].error
        if refusal is not None:
            outcomes[item.index] = refusal
            refused.append(item)
        else:
            accepted.append(item)
    _release(subscription, refused)
    _register_agents_by_name(subscription, accepted, claim.agents)
    events = add_to_ledger(
        [_event(api_key, item, charges[item.index], claim.prices) for item in accepted],
        zone=subscription.zone,
    )
    for item, event in zip(accepted, events, strict=True):
        outcomes[item.index] = Recorded(event=event, created=True)
    for period_id, move in moves.items():
        _note_thresholds(subscription, period_id, before=move.before, after=move.after)
    return taken


def _event(api_key: ApiKey, item: _Pending, charged: Charge, prices: PriceList) -> CreditEvent:
    terms = prices.at(item.timestamp)
    return CreditEvent(
        timestamp=item.timestamp,
        subscription=api_key.subscription,
        period=item.period,
        environment=item.environment,
        user=item.user,
        api_key=api_key,
        product=item.product,
        agent=item.agent,
        grant_credits=charged.grant,
        excess_credits=charged.excess,
        cost=terms.cost(base=charged.base, excess=charged.excess) if terms else Decimal(0),
        **{name: getattr(item.usage, name) for name in ("feature", "model", "credits", *AS_SENT)},
    )


@transaction.atomic
def record_adjustment(
    *,
    subscription: Subscription,
    credits: Decimal,
    reason: str,
    created_by: User,
    timestamp: datetime | None = None,
    environment: Environment | None = None,
    user: User | None = None,
    product: Product | None = None,
) -> CreditEvent:
    """Correct a period's usage with a new ledger row (positive or negative), never an edit.

    Adjustments bypass limits: they are platform staff correcting the record. They are base
    credits, priced at the credit price in effect at their timestamp.
    """
    if not reason.strip():
        raise errors.DomainError("An adjustment needs a reason.", field="reason")
    timestamp = timestamp or timezone.now()
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    period = period_for(subscription=subscription, instant=timestamp)
    BillingPeriod.objects.filter(subscription=subscription, pk=period.pk).update(
        credits_used=F("credits_used") + credits
    )
    if user:
        team_id = TeamMembership.objects.team_id_of(subscription=subscription, user=user)
        if team_id is not None:
            add_to_counters(
                TeamPeriodUsage, "team_id", [(period.pk, team_id, credits)], subscription
            )
        add_to_counters(UserPeriodUsage, "user_id", [(period.pk, user.pk, credits)], subscription)
    terms = price_at(subscription, timestamp)
    event = CreditEvent.objects.create(
        kind=CreditEvent.Kind.ADJUSTMENT,
        timestamp=timestamp,
        subscription=subscription,
        period=period,
        environment=environment,
        user=user,
        product=product,
        credits=credits,
        cost=terms.cost(base=credits, excess=Decimal(0)) if terms else Decimal(0),
        reason=reason,
        created_by=created_by,
    )
    add_to_rollups([event], zone=subscription.zone)
    return event


# --- Resolving what the key may use ----------------------------------------------------------


class _Resolver:
    """Checks each event against what the key may use (``_Found``, read once for all)."""

    def __init__(self, api_key: ApiKey, found: "_Found", now: datetime):
        self.api_key, self.now = api_key, now
        self.subscription = api_key.subscription
        self.environments, self.products = found.environments, found.products
        self.memberships = found.memberships

    def resolve(self, index: int, usage: Usage, fingerprint: str) -> _Pending:
        timestamp = usage.timestamp or self.now
        if timestamp > self.now + timedelta(seconds=settings.FUTURE_EVENT_TOLERANCE_SECONDS):
            raise errors.TimestampInFuture(timestamp=timestamp.isoformat())
        environment = self._environment(usage.environment)
        user = self._member(environment, usage.user) if usage.user else None
        product = self.products.get(usage.product)
        if product is None:
            raise errors.ProductNotEnabled(product=usage.product)
        bounds = period_bounds(timestamp, self.subscription.zone)
        if self.now > bounds.end + timedelta(hours=settings.LATE_EVENT_GRACE_HOURS):
            raise errors.PeriodClosed(period_start=bounds.start.isoformat())
        return _Pending(index, usage, fingerprint, timestamp, environment, user, product, bounds)

    def _environment(self, public_id: UUID) -> Environment:
        """One of the environments the key sees (``visible_to``: its own, if it has one)."""
        environment = self.environments.get(public_id)
        if environment is None:
            raise errors.UnknownEnvironment(environment=str(public_id))
        return environment

    def _member(self, environment: Environment, email: str) -> User:
        """A user with a role in the environment (or an admin of its subscription)."""
        for environment_id, role, user in self.memberships.get(email.lower(), ()):
            in_environment = environment_id == environment.pk
            admin = role == Role.SUBSCRIPTION_ADMIN
            if (in_environment or admin) and user.is_active:
                return user
        raise errors.NotAMember(user=email, environment=str(environment.public_id))


@dataclass
class _Found:
    """What the events of a round name, read in one statement before their transaction: the
    keys' first outcomes (``_Replays``) and what ``_Resolver`` checks them against."""

    records: dict[str, tuple[str, int]]  # key: (payload hash, event id)
    environments: dict[UUID, Environment]
    products: dict[str, Product]
    memberships: dict[str, list[tuple[int | None, str, User]]]  # email: (env, role, user)

    @classmethod
    def read(cls, api_key: ApiKey, usages: list[Usage]) -> "_Found":
        """Plain rows, not querysets: building and compiling four ORM queries cost more CPU
        than the rest of an event's recording. What the key sees is ``visible_to``'s
        ``key_visibility`` for environments and memberships (``accounts/scoping.py``): its
        subscription's, its own environment's when it has one, and nothing when revoked.
        Each read is as fresh as the request: nothing is cached across requests."""
        with connection.cursor() as cursor:
            cursor.execute(
                _found_statement(),
                {
                    "subscription": api_key.subscription_id,
                    "visible": not api_key.revoked,
                    "key_environment": api_key.environment_id,
                    "keys": list({usage.idempotency_key for usage in usages}),
                    "environments": list({usage.environment for usage in usages}),
                    "products": list({usage.product for usage in usages}),
                    "emails": list({usage.user.lower() for usage in usages if usage.user}),
                },
            )
            records, environments, products, memberships = cursor.fetchone()
        alias = connection.alias
        found = cls(
            records={
                key: (payload_hash, event_id) for key, payload_hash, event_id in records or ()
            },
            environments={},
            products={
                slug: Product.from_db(alias, _PRODUCT_FIELDS, (pk, slug, name))
                for pk, slug, name in products or ()
            },
            memberships={},
        )
        for *fields, public_id in environments or ():
            values = (*fields, UUID(public_id))
            environment = Environment.from_db(alias, _ENVIRONMENT_FIELDS, values)
            found.environments[environment.public_id] = environment
        users: dict[int, User] = {}
        for email_lower, environment_id, role, user_id, email, is_active in memberships or ():
            if user_id not in users:
                users[user_id] = User.from_db(alias, _USER_FIELDS, (user_id, email, is_active))
            found.memberships.setdefault(email_lower, []).append(
                (environment_id, role, users[user_id])
            )
        return found


# Each in the order of the model's concrete fields, as ``Model.from_db`` takes them.
_ENVIRONMENT_FIELDS = ("id", "subscription_id", "project_id", "name", "public_id")
_PRODUCT_FIELDS = ("id", "slug", "name")
_USER_FIELDS = ("id", "email", "is_active")  # the rest is deferred: never needed to record


@cache
def _found_statement() -> str:
    tables = {
        "keys": IdempotencyRecord._meta.db_table,
        "environments": Environment._meta.db_table,
        "products": Product._meta.db_table,
        "enabled": Product.enabled_for.through._meta.db_table,
        "memberships": Membership._meta.db_table,
        "users": User._meta.db_table,
    }
    return (
        sql.SQL(
            "SELECT (SELECT json_agg(json_build_array(k.key, k.payload_hash, k.event_id)) "
            "FROM {keys} k WHERE k.subscription_id = %(subscription)s "
            "AND k.key = ANY(%(keys)s::varchar[]) AND k.event_id IS NOT NULL), "
            "(SELECT json_agg(json_build_array(e.id, e.subscription_id, e.project_id, e.name, "
            "e.public_id)) FROM {environments} e "
            "WHERE e.subscription_id = %(subscription)s AND %(visible)s "
            "AND e.public_id = ANY(%(environments)s::uuid[]) "
            "AND (%(key_environment)s::bigint IS NULL OR e.id = %(key_environment)s)), "
            "(SELECT json_agg(json_build_array(p.id, p.slug, p.name)) FROM {products} p "
            "JOIN {enabled} pe ON pe.subscription_id = %(subscription)s "
            "AND pe.product_id = p.id WHERE p.slug = ANY(%(products)s::varchar[])), "
            "(SELECT json_agg(json_build_array(lower(u.email), m.environment_id, m.role, u.id, "
            "u.email, u.is_active)) FROM {memberships} m JOIN {users} u ON u.id = m.user_id "
            "WHERE m.subscription_id = %(subscription)s AND %(visible)s "
            "AND lower(u.email) = ANY(%(emails)s::varchar[]) "
            "AND (%(key_environment)s::bigint IS NULL OR m.environment_id IS NULL "
            "OR m.environment_id = %(key_environment)s))"
        )
        .format(**{name: sql.Identifier(table) for name, table in tables.items()})
        .as_string(None)
    )


def _open_periods(
    subscription: Subscription, pending: list[_Pending], periods: dict[datetime, BillingPeriod]
) -> None:
    """Give each event its period row (found by the claim), opening the missing ones in the
    transaction: a refused lone event leaves no period behind."""
    for item in pending:
        start = item.bounds.start
        if start not in periods:
            periods[start] = period_for(subscription=subscription, instant=item.timestamp)
        item.period = periods[start]


def _find_agents_by_id(pending: list[_Pending], agents: dict, outcomes) -> None:
    """Agents named by id must exist in the subscription; other events are refused."""
    for item in pending:
        if _agent_id(item.usage):
            item.agent = agents.get(int(item.usage.agent))
            if item.agent is None:
                outcomes[item.index] = errors.UnknownAgent(agent=item.usage.agent)


def _register_agents_by_name(
    subscription: Subscription, accepted: list[_Pending], found: dict
) -> None:
    """Give agents named by name their agent (found by the claim); unknown names register new
    agents (described by the first event that names them)."""
    first_use = {}
    for item in accepted:
        if item.usage.agent and not _agent_id(item.usage):
            first_use.setdefault(item.usage.agent, item)
    missing = [name for name in first_use if name not in found]
    if missing:
        # A concurrent request may register the same name: the unique name wins, we reread.
        Agent.objects.bulk_create(
            [_new_agent(subscription, first_use[name]) for name in missing],
            ignore_conflicts=True,
        )
        agents = Agent.objects.filter(subscription=subscription, name__in=missing)
        found.update((agent.name, agent) for agent in agents)
    for item in accepted:
        if item.usage.agent in first_use:
            item.agent = found[item.usage.agent]


def _new_agent(subscription: Subscription, item: _Pending) -> Agent:
    usage = item.usage
    return Agent(
        subscription=subscription,
        name=usage.agent,
        agent_type=usage.agent_type,
        model=usage.model,
        created_by=item.user,
    )


def _agent_id(usage: Usage) -> bool:
    return bool(usage.agent) and usage.agent.isdigit()


# --- Idempotency -------------------------------------------------------------------------------


def _records(subscription: Subscription, keys: Iterable[str]) -> dict[str, tuple[str, int]]:
    """(payload hash, event id) of each of these keys that has an event."""
    return {
        key: (payload_hash, event_id)
        for key, payload_hash, event_id in IdempotencyRecord.objects.filter(
            subscription=subscription, key__in=set(keys), event__isnull=False
        ).values_list("key", "payload_hash", "event_id")
    }


class _Replays:
    """The first outcome of each key that has one (``records``: its payload hash and event),
    the events read only for the replays."""

    def __init__(self, subscription: Subscription, records: dict[str, tuple[str, int]]):
        self.records = records
        self.events = (
            CreditEvent.objects.filter(subscription=subscription)
            .select_related("environment", "user", "product")
            .prefetch_related(Prefetch("agent", Agent.objects.filter(subscription=subscription)))
            .in_bulk([event_id for _, event_id in self.records.values()])
            if self.records
            else {}
        )

    def of(self, key: str, fingerprint: str) -> Recorded | None:
        if key not in self.records:
            return None
        payload_hash, event_id = self.records[key]
        if payload_hash != fingerprint:
            raise errors.IdempotencyConflict(idempotency_key=key)
        event = self.events.get(event_id)
        return Recorded(event=event, created=False) if event else None


@dataclass
class _Claim:
    """What the claim statement found: the keys this transaction claimed, the events' periods
    that exist (by start), the agents they name (by id and by name), the prices."""

    keys: set[str]
    periods: dict[datetime, BillingPeriod]
    agents: dict[int | str, Agent]
    prices: PriceList


def _claim(subscription: Subscription, pending: list[_Pending]) -> _Claim:
    """Claim the keys for this transaction (those another transaction holds are left out),
    read what the events need and set the transaction's plans for ``add_to_ledger``, in one
    statement.

    A concurrent claim of the same key waits on our uncommitted row, then finds it taken.
    Keys are claimed in sorted order, so that two batches cannot deadlock on them.
    """
    agents = {item.usage.agent for item in pending if item.usage.agent}
    with connection.cursor() as cursor:
        cursor.execute(
            _claim_statement(),
            {
                "subscription": subscription.pk,
                "keys": [item.usage.idempotency_key for item in pending],
                "hashes": [item.fingerprint for item in pending],
                "now": timezone.now(),
                "starts": list({item.bounds.start for item in pending}),
                "agent_ids": [int(name) for name in agents if name.isdigit()],
                "agent_names": [name for name in agents if not name.isdigit()],
                "plan": subscription.plan,
            },
        )
        keys, period_ids, starts, agent_rows, price_rows, _ = cursor.fetchone()
    found = [_agent(row) for row in agent_rows or ()]
    return _Claim(
        keys=set(keys),
        periods={
            start: BillingPeriod(id=pk, subscription=subscription, start=start)
            for pk, start in zip(period_ids or (), starts or (), strict=True)
        },
        agents={**{agent.pk: agent for agent in found}, **{agent.name: agent for agent in found}},
        prices=PriceList(
            subscription,
            rows=[
                (currency, Decimal(credit), Decimal(excess), parse_datetime(start), own)
                for currency, credit, excess, start, own in price_rows or ()
            ],
        ),
    )


def _agent(row: dict) -> Agent:
    agent = Agent(**{**row, "created_at": parse_datetime(row["created_at"])})
    agent._state.adding, agent._state.db = False, connection.alias
    return agent


@cache
def _claim_statement() -> str:
    tables = {
        "keys": IdempotencyRecord,
        "periods": BillingPeriod,
        "agents": Agent,
        "own_prices": SubscriptionPrice,
        "plan_prices": PlanPrice,
    }
    return (
        sql.SQL(
            "WITH claimed AS (INSERT INTO {keys} (subscription_id, key, payload_hash, created_at) "
            "SELECT %(subscription)s, c.key, c.hash, %(now)s "
            "FROM unnest(%(keys)s::varchar[], %(hashes)s::varchar[]) AS c(key, hash) "
            "ORDER BY c.key ON CONFLICT (subscription_id, key) DO NOTHING RETURNING key) "
            "SELECT ARRAY(SELECT key FROM claimed), p.ids, p.starts, a.rows, price.rows, "
            "{generic_plans} "
            "FROM (SELECT array_agg(b.id) AS ids, array_agg(b.start) AS starts FROM {periods} b "
            "WHERE b.subscription_id = %(subscription)s "
            "AND b.start = ANY(%(starts)s::timestamptz[])) p, "
            "(SELECT json_agg(agent) AS rows FROM {agents} agent "
            "WHERE agent.subscription_id = %(subscription)s "
            "AND (agent.id = ANY(%(agent_ids)s::bigint[]) "
            "OR agent.name = ANY(%(agent_names)s::varchar[]))) a, "
            "(SELECT json_agg(json_build_array(r.currency, r.credit_price::text, "
            "r.excess_price::text, r.effective_from, r.own)) AS rows FROM ("
            "SELECT o.currency, o.credit_price, o.excess_price, o.effective_from, true AS own "
            "FROM {own_prices} o WHERE o.subscription_id = %(subscription)s UNION ALL "
            "SELECT l.currency, l.credit_price, l.excess_price, l.effective_from, false "
            "FROM {plan_prices} l WHERE l.plan = %(plan)s) r) price"
        )
        .format(
            generic_plans=sql.SQL(GENERIC_PLANS),
            **{name: sql.Identifier(model._meta.db_table) for name, model in tables.items()},
        )
        .as_string(None)
    )


def _release(subscription: Subscription, refused: list[_Pending]) -> None:
    """A refused event keeps no claim: its key may be used again."""
    if refused:
        IdempotencyRecord.objects.filter(
            subscription=subscription, key__in=[item.usage.idempotency_key for item in refused]
        ).delete()


# --- Thresholds --------------------------------------------------------------------------------


def thresholds_crossed(subscription, *, before, after) -> list[str]:
    """The thresholds a charge crossed, from the period's (credits used, excess used) before
    and after it: 80% and 100% of the allocation, and the excess allowance in soft mode."""
    (old_used, old_excess), (used, excess_used) = before, after
    allocation, allowance = subscription.base_allocation, subscription.excess_allowance
    crossed = []
    if allocation > 0:
        for threshold, level in (
            (ThresholdAlert.Threshold.ALLOCATION_80, allocation * Decimal("0.8")),
            (ThresholdAlert.Threshold.ALLOCATION_100, allocation),
        ):
            if old_used < level <= used:
                crossed.append(threshold)
    soft = subscription.limit_mode == Subscription.LimitMode.SOFT
    if soft and allowance > 0 and old_excess < allowance <= excess_used:
        crossed.append(ThresholdAlert.Threshold.EXCESS_100)
    return crossed


def _note_thresholds(subscription, period_id, *, before, after) -> None:
    for threshold in thresholds_crossed(subscription, before=before, after=after):
        _record_crossing(subscription=subscription, period_id=period_id, threshold=threshold)


def _note_caps_reached(subscription, pending: list[_Pending], outcomes: list) -> None:
    """Record the subscription's cap as reached when it refused an event of a period that has
    used 80% of it or more: the hard cap itself is never crossed (the event that would cross
    it is refused), yet from then on the admins' usage is being refused. The cap's alert is
    the allocation's in hard mode and the excess allowance's in soft mode; once per period,
    like any crossing. Its own transaction, after the refused events' own."""
    period_ids = {
        item.period.pk
        for item in pending
        if item.period is not None and isinstance(outcomes[item.index], errors.CreditLimitExceeded)
    }
    cap = subscription.credit_cap
    if not period_ids or cap <= 0:
        return
    soft = subscription.limit_mode == Subscription.LimitMode.SOFT
    threshold = (
        ThresholdAlert.Threshold.EXCESS_100
        if soft and subscription.excess_allowance > 0
        else ThresholdAlert.Threshold.ALLOCATION_100
    )
    near_the_cap = BillingPeriod.objects.filter(
        pk__in=period_ids, subscription=subscription, credits_used__gte=cap * Decimal("0.8")
    )
    with transaction.atomic():
        for period_id in near_the_cap.values_list("pk", flat=True):
            _record_crossing(subscription=subscription, period_id=period_id, threshold=threshold)


def _record_crossing(*, subscription, period_id, threshold) -> None:
    """A unique row per (period, threshold): a race between two charges alerts once."""
    table = ThresholdAlert._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (subscription_id, period_id, threshold, crossed_at) "  # noqa: S608
            "VALUES (%s, %s, %s, %s) ON CONFLICT (subscription_id, period_id, threshold) "
            "DO NOTHING RETURNING id",
            [subscription.pk, period_id, threshold, timezone.now()],
        )
        row = cursor.fetchone()
    if row:
        transaction.on_commit(lambda: queue_alert(row[0]))


def queue_alert(alert_id: int) -> None:
    """Queue the alert email; a broker outage must not fail a charge that has committed.

    Alerts whose email was not sent keep ``notified_at`` empty and are retried by the
    periodic sweep.
    """
    from .tasks import send_threshold_alert

    try:
        send_threshold_alert.delay(alert_id)
    except Exception:  # the broker is down: the sweep sends it later
        logger.exception("event=alert_not_queued alert_id=%s", alert_id)
