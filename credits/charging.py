"""Charging the period counters for a list of events, with conditional updates.

Counters are only ever changed by statements that check and add at once
(``UPDATE ... SET used = used + x WHERE used + x <= cap``), in a fixed order: the
subscription's periods, then teams, then users, then API keys, each by id, so that concurrent
writers cannot deadlock (see DESIGN-NOTES, "Recording an event").

A batch is first charged as a whole: one statement per period and per capped owner, one for
all uncapped owners. That is the common case, and it costs the same for one event as for a
thousand. Only when some counter would go over its cap is the batch charged again one event
at a time, each in its own savepoint, so that exactly the events that fit are accepted, in
order.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection, transaction

from accounts.models import ApiKey, Subscription, TeamMembership, User
from core.errors import DomainError
from core.money import CREDIT_PLACES

from . import errors
from .models import (
    ApiKeyPeriodUsage,
    BillingPeriod,
    CreditLimit,
    TeamPeriodUsage,
    UserPeriodUsage,
)


@dataclass
class Charge:
    """One event's claim on the counters; ``excess`` is filled in once it is charged."""

    period: BillingPeriod
    user: User | None
    credits: Decimal
    api_key: ApiKey | None = None
    excess: Decimal = Decimal(0)
    error: DomainError | None = None


@dataclass
class _Caps:
    """Who is charged besides the subscription, and their limits (None: no limit)."""

    team_of: dict[int, int]
    user_caps: dict[int, Decimal]
    team_caps: dict[int, Decimal]
    key_caps: dict[str, Decimal]


@dataclass
class _PeriodMove:
    before: tuple[Decimal, Decimal] | None = None  # (used, excess used) before the first charge
    after: tuple[Decimal, Decimal] | None = None
    charges: list[Charge] = field(default_factory=list)


class _DoesNotFit(Exception):
    def __init__(self, error: DomainError):
        self.error = error


def charge(
    *, subscription: Subscription, charges: list[Charge], alone: bool = False
) -> dict[int, _PeriodMove]:
    """Charge every event that fits, in order; set ``error`` on each one that does not.

    Must run inside a transaction. With ``alone`` (the transaction holds this one event and
    nothing else), a refusal is raised instead, and the caller's transaction rolls back: no
    savepoint needed. Returns each period's counters before and after, from which the caller
    records the thresholds crossed.
    """
    caps = _caps(subscription, charges)
    if alone:
        try:
            return _charge_together(subscription, charges, caps)
        except _DoesNotFit as refusal:
            raise refusal.error from None
    try:
        with transaction.atomic():
            return _charge_together(subscription, charges, caps)
    except _DoesNotFit:
        return _charge_one_by_one(subscription, charges, caps)


def _caps(subscription: Subscription, charges: list[Charge]) -> _Caps:
    """Each user's team and the limits of both: one query (the hot path of every event, so
    SQL rather than the ORM's three subqueries, which cost more to build than to run).

    A key's budget is read from the key that authenticated the request, as the subscription's
    allocation is read from its subscription: no query."""
    caps = _Caps(
        team_of={},
        user_caps={},
        team_caps={},
        key_caps={
            item.api_key.pk: item.api_key.credit_budget
            for item in charges
            if item.api_key and item.api_key.credit_budget is not None
        },
    )
    user_ids = {item.user.pk for item in charges if item.user}
    if not user_ids:
        return caps
    teams, limits = TeamMembership._meta.db_table, CreditLimit._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT u.id, tm.team_id, ul.credits, tl.credits FROM {User._meta.db_table} u "  # noqa: S608
            f"LEFT JOIN {teams} tm ON tm.user_id = u.id AND tm.subscription_id = %s "
            f"LEFT JOIN {limits} ul ON ul.user_id = u.id AND ul.subscription_id = %s "
            f"LEFT JOIN {limits} tl ON tl.team_id = tm.team_id AND tl.subscription_id = %s "
            f"WHERE u.id IN ({', '.join(['%s'] * len(user_ids))})",
            [subscription.pk] * 3 + sorted(user_ids),
        )
        rows = cursor.fetchall()
    for user_id, team_id, user_cap, team_cap in rows:
        if team_id is not None:
            caps.team_of[user_id] = team_id
            if team_cap is not None:
                caps.team_caps[team_id] = _credits(team_cap)
        if user_cap is not None:
            caps.user_caps[user_id] = _credits(user_cap)
    return caps


def _charge_together(subscription, charges, caps) -> dict[int, _PeriodMove]:
    moves: dict[int, _PeriodMove] = defaultdict(_PeriodMove)
    team_sums: dict[tuple[int, int], Decimal] = defaultdict(Decimal)
    user_sums: dict[tuple[int, int], Decimal] = defaultdict(Decimal)
    key_sums: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    for item in charges:
        moves[item.period.pk].charges.append(item)
        if item.api_key:
            key_sums[item.period.pk, item.api_key.pk] += item.credits
        if item.user:
            user_sums[item.period.pk, item.user.pk] += item.credits
            team_id = caps.team_of.get(item.user.pk)
            if team_id is not None:
                team_sums[item.period.pk, team_id] += item.credits
    for period_id in sorted(moves):
        move = moves[period_id]
        total = sum((item.credits for item in move.charges), Decimal(0))
        move.before, move.after = _charge_period(subscription, move.charges[0].period, total)
        _spread_excess(subscription, move)
    _charge_owners(
        subscription, TeamPeriodUsage, "team_id", team_sums, caps.team_caps, _team_refusal
    )
    _charge_owners(
        subscription,
        UserPeriodUsage,
        "user_id",
        user_sums,
        caps.user_caps,
        _user_refusal(charges),
    )
    _charge_owners(
        subscription,
        ApiKeyPeriodUsage,
        "api_key_id",
        key_sums,
        caps.key_caps,
        _key_refusal(charges),
    )
    return moves


def _charge_one_by_one(subscription, charges, caps) -> dict[int, _PeriodMove]:
    moves: dict[int, _PeriodMove] = defaultdict(_PeriodMove)
    for item in charges:
        try:
            with transaction.atomic():
                moved = _charge_together(subscription, [item], caps)[item.period.pk]
        except _DoesNotFit as refusal:
            item.error = refusal.error
            continue
        move = moves[item.period.pk]
        move.before = move.before or moved.before
        move.after = moved.after
        move.charges.append(item)
    return moves


def _charge_period(subscription, period, credits) -> tuple[tuple, tuple]:
    """Add ``credits`` to the period if they fit; the (used, excess) before and after."""
    allocation, cap = subscription.base_allocation, subscription.credit_cap
    table = BillingPeriod._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET credits_used = credits_used + %(x)s, "  # noqa: S608
            "excess_used = excess_used"
            " + CASE WHEN credits_used + %(x)s > %(allocation)s"
            "   THEN credits_used + %(x)s - %(allocation)s ELSE 0 END"
            " - CASE WHEN credits_used > %(allocation)s"
            "   THEN credits_used - %(allocation)s ELSE 0 END "
            "WHERE subscription_id = %(subscription)s AND id = %(id)s"
            " AND credits_used + %(x)s <= %(cap)s "
            "RETURNING credits_used, excess_used",
            {
                "x": credits,
                "allocation": allocation,
                "cap": cap,
                "subscription": subscription.pk,
                "id": period.pk,
            },
        )
        row = cursor.fetchone()
    if row is None:
        raise _DoesNotFit(
            errors.CreditLimitExceeded(
                limit=str(cap), used=str(period.credits_used), credits=str(credits)
            )
        )
    used, excess_used = _credits(row[0]), _credits(row[1])
    before = (used - credits, excess_used - excess_of(used, credits, allocation))
    return before, (used, excess_used)


def _spread_excess(subscription, move: _PeriodMove) -> None:
    """Each event's share of the excess, taking the events in order from ``before``."""
    used = move.before[0]
    for item in move.charges:
        used += item.credits
        item.excess = excess_of(used, item.credits, subscription.base_allocation)


def _charge_owners(subscription, model, owner_column, sums, caps, refusal) -> None:
    """Add each owner's credits to its period counter: capped owners one conditional
    statement each, all the others in one upsert."""
    uncapped = []
    for period_id, owner_id in sorted(sums):
        credits = sums[period_id, owner_id]
        cap = caps.get(owner_id)
        if cap is None:
            uncapped.append((period_id, owner_id, credits))
        elif credits > cap or not _add_within_cap(
            subscription, model, owner_column, period_id, owner_id, credits, cap
        ):
            raise _DoesNotFit(refusal(owner_id, cap))
    add_to_counters(model, owner_column, uncapped, subscription)


def _add_within_cap(subscription, model, owner_column, period_id, owner_id, credits, cap) -> bool:
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (subscription_id, period_id, {owner_column}, credits_used) "  # noqa: S608
            "VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT (subscription_id, period_id, {owner_column}) DO UPDATE "
            f"SET credits_used = {table}.credits_used + EXCLUDED.credits_used "
            f"WHERE {table}.credits_used + EXCLUDED.credits_used <= %s RETURNING credits_used",
            [subscription.pk, period_id, owner_id, credits, cap],
        )
        return cursor.fetchone() is not None


def add_to_counters(
    model, owner_column, rows: list[tuple[int, int, Decimal]], subscription: Subscription
) -> None:
    """Add credits to (period, owner) counters of ``subscription`` without a cap: one upsert
    for all rows.

    Negative amounts (adjustments) cannot go through an upsert: PostgreSQL checks the
    counter's CHECK constraint (not negative) on the row it proposes to insert before it
    looks for a conflict. Their rows are made sure to exist, then subtracted from.
    """
    if not rows:
        return
    table = model._meta.db_table
    key = f"(subscription_id, period_id, {owner_column})"
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (subscription_id, period_id, {owner_column}, credits_used) "  # noqa: S608
            f"VALUES {values} ON CONFLICT {key} DO UPDATE "
            f"SET credits_used = {table}.credits_used + EXCLUDED.credits_used",
            [
                value
                for period_id, owner_id, credits in rows
                for value in (subscription.pk, period_id, owner_id, max(credits, Decimal(0)))
            ],
        )
        for period_id, owner_id, credits in rows:
            if credits < 0:
                cursor.execute(
                    f"UPDATE {table} SET credits_used = credits_used + %s "  # noqa: S608
                    f"WHERE subscription_id = %s AND period_id = %s AND {owner_column} = %s",
                    [credits, subscription.pk, period_id, owner_id],
                )


def _team_refusal(team_id, cap) -> DomainError:
    return errors.TeamLimitExceeded(team=team_id, limit=str(cap))


def _user_refusal(charges):
    emails = {item.user.pk: item.user.email for item in charges if item.user}

    def refusal(user_id, cap) -> DomainError:
        return errors.UserLimitExceeded(user=emails[user_id], limit=str(cap))

    return refusal


def _key_refusal(charges):
    prefixes = {item.api_key.pk: item.api_key.prefix for item in charges if item.api_key}

    def refusal(key_id, cap) -> DomainError:
        return errors.ApiKeyBudgetExceeded(api_key=prefixes[key_id], budget=str(cap))

    return refusal


def excess_of(used: Decimal, credits: Decimal, allocation: Decimal) -> Decimal:
    """How many of ``credits`` (ending at ``used``) lie beyond the allocation."""
    return max(Decimal(0), used - allocation) - max(Decimal(0), used - credits - allocation)


def _credits(value) -> Decimal:
    """A counter read back from SQL, at the ledger's four places."""
    return Decimal(str(value)).quantize(CREDIT_PLACES)
