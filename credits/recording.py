"""Recording credit use: the one place that writes the ledger, its counters and its rollups.

One event is one transaction (see DESIGN-NOTES, "Recording an event"):

1. resolve the environment, user, product and agent the API key may use;
2. claim the idempotency key (``INSERT ... ON CONFLICT DO NOTHING``): a replay with the same
   payload returns the first event, another payload is a conflict;
3. charge the period counters with conditional updates that check and add in one statement,
   in a fixed order (subscription, team, user) so that concurrent charges cannot deadlock;
4. insert the ledger row and upsert its daily rollup;
5. record each threshold crossed as a unique row and queue its email after commit.

Any refusal raises a ``DomainError`` and rolls the whole transaction back.
"""

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.models import (
    ApiKey,
    Environment,
    Membership,
    Role,
    Subscription,
    TeamMembership,
    User,
)

from . import errors
from .billing import period_for
from .models import (
    Agent,
    BillingPeriod,
    CreditEvent,
    CreditLimit,
    IdempotencyRecord,
    Product,
    TeamPeriodUsage,
    ThresholdAlert,
    UserPeriodUsage,
)
from .rollups import add_to_rollups

logger = logging.getLogger(__name__)

CREDIT_PLACES = Decimal("0.0001")


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
        fields = asdict(self)
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


def record_usage(*, api_key: ApiKey, usage: Usage, now: datetime | None = None) -> Recorded:
    """Record one event for the key's subscription, or raise why it was refused."""
    now = now or timezone.now()
    subscription = api_key.subscription
    fingerprint = usage.fingerprint()

    replay = _replay(subscription=subscription, usage=usage, fingerprint=fingerprint)
    if replay:
        return replay

    timestamp = usage.timestamp or now
    if timestamp > now + timedelta(seconds=settings.FUTURE_EVENT_TOLERANCE_SECONDS):
        raise errors.TimestampInFuture(timestamp=timestamp.isoformat())
    environment = _environment(api_key=api_key, public_id=usage.environment)
    user = _member(environment=environment, email=usage.user) if usage.user else None
    product = _enabled_product(subscription=subscription, slug=usage.product)

    try:
        event = _record(
            api_key=api_key,
            usage=usage,
            fingerprint=fingerprint,
            timestamp=timestamp,
            now=now,
            resolved=(environment, user, product),
        )
    except _KeyTaken:
        # Another request with this key committed between our check and our claim.
        replay = _replay(subscription=subscription, usage=usage, fingerprint=fingerprint)
        if replay is None:  # the key's event was archived with its partition
            raise errors.IdempotencyConflict(idempotency_key=usage.idempotency_key) from None
        return replay
    return Recorded(event=event, created=True)


class _KeyTaken(Exception):
    pass


@transaction.atomic
def _record(*, api_key, usage, fingerprint, timestamp, now, resolved) -> CreditEvent:
    environment, user, product = resolved
    subscription = api_key.subscription
    period = period_for(subscription=subscription, instant=timestamp)
    if now > period.end + timedelta(hours=settings.LATE_EVENT_GRACE_HOURS):
        raise errors.PeriodClosed(period_start=period.start.isoformat())
    if not _claim(subscription=subscription, key=usage.idempotency_key, fingerprint=fingerprint):
        raise _KeyTaken
    agent = _agent(subscription=subscription, usage=usage, created_by=user)
    excess = _charge(subscription=subscription, period=period, user=user, credits=usage.credits)
    event = CreditEvent.objects.create(
        timestamp=timestamp,
        subscription=subscription,
        period=period,
        environment=environment,
        user=user,
        api_key=api_key,
        product=product,
        feature=usage.feature,
        agent=agent,
        model=usage.model,
        credits=usage.credits,
        excess_credits=excess,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        latency_ms=usage.latency_ms,
        status=usage.status,
        session_id=usage.session_id,
        idempotency_key=usage.idempotency_key,
    )
    IdempotencyRecord.objects.filter(subscription=subscription, key=usage.idempotency_key).update(
        event=event
    )
    add_to_rollups([event], zone=subscription.zone)
    return event


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

    Adjustments bypass limits: they are platform staff correcting the record.
    """
    if not reason.strip():
        raise errors.DomainError("An adjustment needs a reason.", field="reason")
    timestamp = timestamp or timezone.now()
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    period = period_for(subscription=subscription, instant=timestamp)
    _add(BillingPeriod, period.pk, credits, column="credits_used")
    if user:
        team_id = TeamMembership.objects.team_id_of(subscription=subscription, user=user)
        if team_id is not None:
            _upsert_counter(TeamPeriodUsage, "team_id", period.pk, team_id, credits, cap=None)
        _upsert_counter(UserPeriodUsage, "user_id", period.pk, user.pk, credits, cap=None)
    event = CreditEvent.objects.create(
        kind=CreditEvent.Kind.ADJUSTMENT,
        timestamp=timestamp,
        subscription=subscription,
        period=period,
        environment=environment,
        user=user,
        product=product,
        credits=credits,
        reason=reason,
        created_by=created_by,
    )
    add_to_rollups([event], zone=subscription.zone)
    return event


# --- Resolving what the key may use ----------------------------------------------------------


def _environment(*, api_key: ApiKey, public_id: UUID) -> Environment:
    environment = (
        Environment.objects.select_related("project")
        .filter(public_id=public_id, project__subscription_id=api_key.subscription_id)
        .first()
    )
    if environment is None or (api_key.environment_id and environment.pk != api_key.environment_id):
        raise errors.UnknownEnvironment(environment=str(public_id))
    return environment


def _member(*, environment: Environment, email: str) -> User:
    """A user with a role in the environment (or an admin of its subscription)."""
    membership = (
        Membership.objects.select_related("user")
        # Lower(), not iexact (UPPER): the case-insensitive unique index on users serves it.
        .alias(email_lower=Lower("user__email"))
        .filter(email_lower=email.lower(), subscription_id=environment.project.subscription_id)
        .filter(Q(environment=environment) | Q(role=Role.SUBSCRIPTION_ADMIN))
        .first()
    )
    if membership is None or not membership.user.is_active:
        raise errors.NotAMember(user=email, environment=str(environment.public_id))
    return membership.user


def _enabled_product(*, subscription: Subscription, slug: str) -> Product:
    product = Product.objects.filter(slug=slug, enabled_for=subscription).first()
    if product is None:
        raise errors.ProductNotEnabled(product=slug)
    return product


def _agent(*, subscription: Subscription, usage: Usage, created_by: User | None) -> Agent | None:
    """Find the agent by id or name; an unknown name registers a new agent."""
    if not usage.agent:
        return None
    if usage.agent.isdigit():
        agent = Agent.objects.filter(subscription=subscription, pk=int(usage.agent)).first()
        if agent is None:
            raise errors.UnknownAgent(agent=usage.agent)
        return agent
    agent, _ = Agent.objects.get_or_create(
        subscription=subscription,
        name=usage.agent,
        defaults={"agent_type": usage.agent_type, "model": usage.model, "created_by": created_by},
    )
    return agent


# --- Idempotency -------------------------------------------------------------------------------


def _replay(*, subscription: Subscription, usage: Usage, fingerprint: str) -> Recorded | None:
    """The first outcome of this key, if it has one. One index lookup when it has none (the
    common case); the event is read only for a replay."""
    record = (
        IdempotencyRecord.objects.filter(
            subscription=subscription, key=usage.idempotency_key, event__isnull=False
        )
        .values_list("payload_hash", "event_id")
        .first()
    )
    if record is None:
        return None
    payload_hash, event_id = record
    if payload_hash != fingerprint:
        raise errors.IdempotencyConflict(idempotency_key=usage.idempotency_key)
    event = CreditEvent.objects.filter(pk=event_id).first()
    return Recorded(event=event, created=False) if event else None


def _claim(*, subscription: Subscription, key: str, fingerprint: str) -> bool:
    """Claim the key for this transaction; False if another transaction already holds it.

    A concurrent claim of the same key waits on our uncommitted row, then finds it taken.
    """
    table = IdempotencyRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (subscription_id, key, payload_hash, created_at) "  # noqa: S608
            "VALUES (%s, %s, %s, %s) ON CONFLICT (subscription_id, key) DO NOTHING RETURNING id",
            [subscription.pk, key, fingerprint, timezone.now()],
        )
        return cursor.fetchone() is not None


# --- Charging the counters ---------------------------------------------------------------------


def _charge(
    *, subscription: Subscription, period: BillingPeriod, user: User | None, credits: Decimal
) -> Decimal:
    """Charge subscription, team and user counters, in that order; return the excess credits."""
    allocation = subscription.base_allocation
    cap = allocation
    if subscription.limit_mode == Subscription.LimitMode.SOFT:
        cap += subscription.excess_allowance
    table = BillingPeriod._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET credits_used = credits_used + %(x)s, "  # noqa: S608
            "excess_used = excess_used"
            " + CASE WHEN credits_used + %(x)s > %(allocation)s"
            "   THEN credits_used + %(x)s - %(allocation)s ELSE 0 END"
            " - CASE WHEN credits_used > %(allocation)s"
            "   THEN credits_used - %(allocation)s ELSE 0 END "
            "WHERE id = %(id)s AND credits_used + %(x)s <= %(cap)s "
            "RETURNING credits_used, excess_used",
            {"x": credits, "allocation": allocation, "cap": cap, "id": period.pk},
        )
        row = cursor.fetchone()
    if row is None:
        raise errors.CreditLimitExceeded(
            limit=str(cap), used=str(period.credits_used), credits=str(credits)
        )
    used, excess_used = _credits(row[0]), _credits(row[1])
    old_used, old_excess = used - credits, excess_used - _event_excess(used, credits, allocation)
    if user:
        _charge_team(subscription=subscription, period=period, user=user, credits=credits)
        cap = _limit(subscription=subscription, user=user)
        if not _upsert_counter(UserPeriodUsage, "user_id", period.pk, user.pk, credits, cap=cap):
            raise errors.UserLimitExceeded(user=user.email, limit=str(cap))
    _note_thresholds(
        subscription=subscription,
        period=period,
        before=(old_used, old_excess),
        after=(used, excess_used),
    )
    return excess_used - old_excess


def _charge_team(
    *, subscription: Subscription, period: BillingPeriod, user: User, credits: Decimal
) -> None:
    team_id = TeamMembership.objects.team_id_of(subscription=subscription, user=user)
    if team_id is None:
        return
    cap = _limit(subscription=subscription, team_id=team_id)
    if not _upsert_counter(TeamPeriodUsage, "team_id", period.pk, team_id, credits, cap=cap):
        raise errors.TeamLimitExceeded(team=team_id, limit=str(cap))


def _limit(*, subscription: Subscription, user: User | None = None, team_id=None) -> Decimal | None:
    limits = CreditLimit.objects.filter(subscription=subscription)
    limits = limits.filter(user=user) if user else limits.filter(team_id=team_id)
    return limits.values_list("credits", flat=True).first()


def _upsert_counter(model, owner_column, period_id, owner_id, credits, *, cap) -> bool:
    """Add ``credits`` to a per-period counter if it stays within ``cap``; False if refused."""
    if cap is not None and credits > cap:
        return False
    table = model._meta.db_table
    if credits < 0:
        # A negative adjustment. PostgreSQL checks the CHECK constraint (not negative) on the
        # row an upsert proposes to insert before it looks for a conflict, so an upsert of a
        # negative amount always fails: make sure the row exists, then subtract from it.
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (period_id, {owner_column}, credits_used) "  # noqa: S608
                f"VALUES (%s, %s, 0) ON CONFLICT (period_id, {owner_column}) DO NOTHING",
                [period_id, owner_id],
            )
            cursor.execute(
                f"UPDATE {table} SET credits_used = credits_used + %s "  # noqa: S608
                f"WHERE period_id = %s AND {owner_column} = %s RETURNING credits_used",
                [credits, period_id, owner_id],
            )
            return cursor.fetchone() is not None
    guard = f"WHERE {table}.credits_used + EXCLUDED.credits_used <= %s" if cap is not None else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (period_id, {owner_column}, credits_used) "  # noqa: S608
            f"VALUES (%s, %s, %s) ON CONFLICT (period_id, {owner_column}) DO UPDATE "
            f"SET credits_used = {table}.credits_used + EXCLUDED.credits_used {guard} "
            "RETURNING credits_used",
            [period_id, owner_id, credits, *([cap] if cap is not None else [])],
        )
        return cursor.fetchone() is not None


def _add(model, pk, credits: Decimal, *, column: str) -> None:
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {column} = {column} + %s WHERE id = %s",  # noqa: S608
            [credits, pk],
        )


def _event_excess(used: Decimal, credits: Decimal, allocation: Decimal) -> Decimal:
    """How many of ``credits`` (ending at ``used``) lie beyond the allocation."""
    return max(Decimal(0), used - allocation) - max(Decimal(0), used - credits - allocation)


def _credits(value) -> Decimal:
    """A counter read back from SQL as an exact Decimal (SQLite returns floats)."""
    return Decimal(str(value)).quantize(CREDIT_PLACES)


# --- Thresholds --------------------------------------------------------------------------------


def _note_thresholds(*, subscription, period, before, after) -> None:
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
    for threshold in crossed:
        _record_crossing(subscription=subscription, period=period, threshold=threshold)


def _record_crossing(*, subscription, period, threshold) -> None:
    """A unique row per (period, threshold): a race between two charges alerts once."""
    table = ThresholdAlert._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (subscription_id, period_id, threshold, crossed_at) "  # noqa: S608
            "VALUES (%s, %s, %s, %s) ON CONFLICT (period_id, threshold) DO NOTHING RETURNING id",
            [subscription.pk, period.pk, threshold, timezone.now()],
        )
        row = cursor.fetchone()
    if row:
        transaction.on_commit(lambda: _queue_alert(row[0]))


def _queue_alert(alert_id: int) -> None:
    """Queue the alert email; a broker outage must not fail a charge that has committed.

    Alerts whose email was not sent keep ``notified_at`` empty and are retried by the
    periodic sweep.
    """
    from .tasks import send_threshold_alert

    try:
        send_threshold_alert.delay(alert_id)
    except Exception:  # the broker is down: the sweep sends it later
        logger.exception("event=alert_not_queued alert_id=%s", alert_id)
