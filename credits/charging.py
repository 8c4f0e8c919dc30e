"""Charging the period counters for a list of events, with conditional updates.

Counters are only ever changed by statements that check and add at once
(``UPDATE ... SET used = used + x WHERE used + x <= cap``), in a fixed order: the
subscription's periods, then its grants, then teams, then users, then API keys, each by
id, so that concurrent writers cannot deadlock (see DESIGN-NOTES, "Recording an event").

Each event draws its credits in one order (the README's "Draw-down order"): the period's base
allocation, then the grants active at the event's time by earliest expiry (no expiry last,
then oldest first), then excess, in soft mode only and up to the allowance. What does not fit
is refused: a period's cap is its allocation plus its active grants' remaining credits (plus
the allowance in soft mode).

Events that all fit in their periods' base allocations, the common case, cost one statement
for every counter: periods, teams, users and the API key, in that order, each owner within its
cap (``_charge_within_base``). Otherwise that statement has locked the period rows, read their
counters and written nothing; each period is charged then on its own, the subscription's
active grants are locked next (by id), the events are split in order over base, grants and
excess, and the period and grant counters are then written with conditional updates that
check the split once more.

A batch is first charged as a whole, which costs the same for one event as for a thousand.
Only when some counter would go over its cap is the batch charged again one event at a time,
each in its own savepoint, so that exactly the events that fit are accepted, in order.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cache

from django.db import connection, transaction
from psycopg import sql

from accounts.models import ApiKey, Subscription, TeamMembership, User
from core.errors import DomainError
from core.money import CREDIT_PLACES

from . import errors
from .models import (
    ApiKeyPeriodUsage,
    BillingPeriod,
    CreditGrant,
    CreditLimit,
    TeamPeriodUsage,
    UserPeriodUsage,
)


@dataclass
class Charge:
    """One event's claim on the counters; ``grant`` (credits drawn from grants) and ``excess``
    are filled in once it is charged; the rest is base."""

    period: BillingPeriod
    user: User | None
    credits: Decimal
    timestamp: datetime
    grant: Decimal = Decimal(0)
    api_key: ApiKey | None = None
    excess: Decimal = Decimal(0)
    error: DomainError | None = None

    @property
    def base(self) -> Decimal:
        return self.credits - self.grant - self.excess


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
    caps = _CapsOnce(subscription, charges)
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


class _CapsOnce:
    """The owners' caps (``_caps``), read when first needed: only charges beyond the base
    allocation need them, in Python."""

    def __init__(self, subscription: Subscription, charges: list[Charge]):
        self.subscription, self.charges, self.read = subscription, charges, None

    def get(self) -> "_Caps":
        if self.read is None:
            self.read = _caps(self.subscription, self.charges)
        return self.read


def _charge_together(subscription, charges, caps: _CapsOnce) -> dict[int, _PeriodMove]:
    moves = _charge_within_base(subscription, charges)
    if moves is not None:
        return moves
    return _charge_beyond_base(subscription, charges, caps.get())


def _charge_beyond_base(subscription, charges, caps: _Caps) -> dict[int, _PeriodMove]:
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
    _charge_periods(subscription, moves)
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


def _charge_within_base(subscription, charges: list[Charge]) -> dict[int, _PeriodMove] | None:
    """Charge every counter in one statement when each period's events fit in its base
    allocation, the common case; None (nothing written, the periods locked) when one does not.

    The statement keeps the lock order (periods by id, then teams, users and API keys, each
    in key order): each part reads the one before it to the end before it writes. An owner's
    cap that does not fit is a refusal; the caller rolls back what the statement wrote.
    """
    key_ids = {item.api_key.pk for item in charges if item.api_key}
    budgets = {item.api_key.credit_budget for item in charges if item.api_key}
    assert len(key_ids) <= 1 and len(budgets) <= 1, "one API key per charge"
    with connection.cursor() as cursor:
        cursor.execute(
            _within_base_statement(),
            {
                "subscription": subscription.pk,
                "allocation": subscription.base_allocation,
                "periods": [item.period.pk for item in charges],
                "users": [item.user.pk if item.user else None for item in charges],
                "keys": [item.api_key.pk if item.api_key else None for item in charges],
                "credits": [item.credits for item in charges],
                "budget": next(iter(budgets), None),
            },
        )
        periods, fits, team, user, key = cursor.fetchone()
    if not fits:
        return None
    if team:
        raise _DoesNotFit(_team_refusal(int(team[0]), _credits(team[1])))
    if user:
        raise _DoesNotFit(_user_refusal(charges)(int(user[0]), _credits(user[1])))
    if key:
        raise _DoesNotFit(_key_refusal(charges)(key[0], _credits(key[1])))
    moves: dict[int, _PeriodMove] = defaultdict(_PeriodMove)
    for item in charges:
        moves[item.period.pk].charges.append(item)
    for period_id, used, excess in periods:
        period_id = int(period_id)
        total = sum((item.credits for item in moves[period_id].charges), Decimal(0))
        used, excess = _credits(used), _credits(excess)
        moves[period_id].before = (used, excess)
        moves[period_id].after = (used + total, excess)
    return moves


def _owner_parts(name: str, model, owner: str, source: str, cap, gate: str) -> list[sql.Composed]:
    """An owner counter's CTEs: ``{name}`` sums the events per (period, owner) with the
    owner's cap (``cap(alias)``: the cap of the row ``alias``), once ``gate`` holds;
    ``{name}_rows`` adds those within it, in key order."""
    names = {
        "name": sql.Identifier(name),
        "rows": sql.Identifier(f"{name}_rows"),
        "table": sql.Identifier(model._meta.db_table),
        "owner": sql.Identifier(owner),
    }
    return [
        sql.SQL(
            "{name} AS (SELECT s.*, {cap} AS cap FROM ({source} AND {gate} GROUP BY 1, 2) s)"
        ).format(cap=cap(sql.Identifier("s")), source=sql.SQL(source), gate=sql.SQL(gate), **names),
        sql.SQL(
            "{rows} AS (INSERT INTO {table} (subscription_id, period_id, {owner}, credits_used) "
            "SELECT %(subscription)s, period_id, {owner}, credits FROM {name} "
            "WHERE cap IS NULL OR credits <= cap ORDER BY period_id, {owner} "
            "ON CONFLICT (subscription_id, period_id, {owner}) DO UPDATE "
            "SET credits_used = {table}.credits_used + EXCLUDED.credits_used "
            "WHERE {table}.credits_used + EXCLUDED.credits_used <= "
            "COALESCE({cap}, 'Infinity') RETURNING period_id, {owner})"
        ).format(cap=cap(sql.SQL("EXCLUDED")), **names),
    ]


@cache
def _within_base_statement() -> str:
    tables = {
        "periods": BillingPeriod,
        "limits": CreditLimit,
        "members": TeamMembership,
    }
    tables = {name: sql.Identifier(model._meta.db_table) for name, model in tables.items()}

    def limit(owner: str):
        return lambda alias: sql.SQL(
            "(SELECT l.credits FROM {limits} l WHERE l.subscription_id = %(subscription)s "
            "AND l.{owner} = {alias}.{owner})"
        ).format(owner=sql.Identifier(owner), alias=alias, **tables)

    def refused(name: str, owner: str) -> sql.Composed:
        return sql.SQL(
            "(SELECT ARRAY[o.{owner}::text, o.cap::text] FROM {name} o WHERE NOT EXISTS "
            "(SELECT 1 FROM {rows} r WHERE r.period_id = o.period_id "
            "AND r.{owner} = o.{owner}) ORDER BY o.period_id, o.{owner} LIMIT 1)"
        ).format(
            name=sql.Identifier(name),
            rows=sql.Identifier(f"{name}_rows"),
            owner=sql.Identifier(owner),
        )

    charged = "(SELECT count(*) FROM charged) > 0"
    done = "(SELECT count(*) FROM {0}_rows) = (SELECT count(*) FROM {0})"
    parts = [
        sql.SQL(
            "x AS (SELECT * FROM unnest(%(periods)s::bigint[], %(users)s::bigint[], "
            "%(keys)s::varchar[], %(credits)s::numeric[]) "
            "AS x(period_id, user_id, api_key_id, credits))"
        ),
        # Every period locked (by id) and read; charged only if each one's events all fit.
        sql.SQL(
            "locked AS (SELECT b.id, b.credits_used, b.excess_used, "
            "b.credits_used - b.grant_used + t.credits <= %(allocation)s AS fits, t.credits "
            "FROM {periods} b JOIN (SELECT period_id, SUM(credits) AS credits FROM x "
            "GROUP BY period_id) t ON t.period_id = b.id "
            "WHERE b.subscription_id = %(subscription)s ORDER BY b.id FOR UPDATE OF b)"
        ).format(**tables),
        sql.SQL("fit AS (SELECT bool_and(fits) AS fits FROM locked)"),
        sql.SQL(
            "charged AS (UPDATE {periods} p SET credits_used = p.credits_used + l.credits "
            "FROM locked l WHERE p.subscription_id = %(subscription)s AND p.id = l.id "
            "AND (SELECT fits FROM fit) RETURNING p.id)"
        ).format(**tables),
        *_owner_parts(
            "team",
            TeamPeriodUsage,
            "team_id",
            sql.SQL(
                "SELECT x.period_id, m.team_id, SUM(x.credits) AS credits FROM x "
                "JOIN {members} m ON m.subscription_id = %(subscription)s "
                "AND m.user_id = x.user_id WHERE true"
            )
            .format(**tables)
            .as_string(None),
            limit("team_id"),
            charged,
        ),
        *_owner_parts(
            "person",
            UserPeriodUsage,
            "user_id",
            "SELECT x.period_id, x.user_id, SUM(x.credits) AS credits FROM x "
            "WHERE x.user_id IS NOT NULL",
            limit("user_id"),
            f"{charged} AND {done.format('team')}",
        ),
        *_owner_parts(
            "api_key",
            ApiKeyPeriodUsage,
            "api_key_id",
            "SELECT x.period_id, x.api_key_id, SUM(x.credits) AS credits FROM x "
            "WHERE x.api_key_id IS NOT NULL",
            lambda alias: sql.SQL("%(budget)s::numeric"),
            f"{charged} AND {done.format('team')} AND {done.format('person')}",
        ),
    ]
    statement = sql.SQL(
        "WITH {parts} SELECT "
        "ARRAY(SELECT ARRAY[l.id, l.credits_used, l.excess_used] FROM locked l ORDER BY l.id), "
        "(SELECT fits FROM fit), {teams}, {people}, {keys}"
    ).format(
        parts=sql.SQL(", ").join(parts),
        teams=refused("team", "team_id"),
        people=refused("person", "user_id"),
        keys=refused("api_key", "api_key_id"),
    )
    return statement.as_string(None)


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


@dataclass
class _Counters:
    """A locked period's counters: base used is ``used - granted - excess``."""

    used: Decimal
    granted: Decimal
    excess: Decimal


def _charge_periods(subscription, moves: dict[int, _PeriodMove]) -> None:
    """Charge each period (by id): within its base allocation in one statement; beyond it,
    split over the grants (locked after every period) and excess, then written."""
    over: dict[int, _Counters] = {}
    grants_wanted = False
    for period_id in sorted(moves):
        move = moves[period_id]
        total = sum((item.credits for item in move.charges), Decimal(0))
        fits, counters, has_grants = _charge_base(subscription, move, total)
        if fits:
            move.after = (counters.used, counters.excess)
            move.before = (counters.used - total, counters.excess)
        else:
            over[period_id] = counters
            move.before = (counters.used, counters.excess)
            grants_wanted |= has_grants
    if not over:
        return
    grants = _lock_grants(subscription, [moves[p] for p in over]) if grants_wanted else []
    drawn: dict[int, Decimal] = defaultdict(Decimal)
    for period_id, counters in over.items():
        for item in moves[period_id].charges:
            _split(subscription, item, counters, grants, drawn)
    for period_id in sorted(over):
        moves[period_id].after = _write_period(subscription, moves[period_id])
    _write_grants(subscription, drawn)


def _charge_base(subscription, move: _PeriodMove, credits: Decimal):
    """Lock the period's row and add ``credits`` if they all fit in the base allocation.

    Returns whether they did, the counters after, and (when they did not) whether the
    subscription may have active grants to draw on (read without a lock: a hint that saves
    the grants' query, never a reason to overspend)."""
    table, grants = BillingPeriod._meta.db_table, CreditGrant._meta.db_table
    times = [item.timestamp for item in move.charges]
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH locked AS (SELECT id, credits_used - grant_used + %(x)s "  # noqa: S608
            f"<= %(allocation)s AS fits FROM {table} b "
            "WHERE b.subscription_id = %(subscription)s AND b.id = %(id)s FOR UPDATE) "
            f"UPDATE {table} p SET credits_used = p.credits_used"
            " + CASE WHEN locked.fits THEN %(x)s ELSE 0 END FROM locked "
            "WHERE p.subscription_id = %(subscription)s AND p.id = locked.id "
            "RETURNING p.credits_used, p.grant_used, p.excess_used, locked.fits, "
            f"NOT locked.fits AND EXISTS (SELECT 1 FROM {grants} g "
            "WHERE g.subscription_id = %(subscription)s AND g.effective_at <= %(last)s"
            " AND (g.expires_at IS NULL OR g.expires_at > %(first)s)"
            " AND g.credits_used + g.credits_lapsed < g.credits + g.credits_adjusted)",
            {
                "x": credits,
                "allocation": subscription.base_allocation,
                "subscription": subscription.pk,
                "id": move.charges[0].period.pk,
                "first": min(times),
                "last": max(times),
            },
        )
        used, granted, excess, fits, has_grants = cursor.fetchone()
    return fits, _Counters(_credits(used), _credits(granted), _credits(excess)), has_grants


@dataclass
class _Grant:
    """A locked grant: its remaining credits and when it may be drawn on."""

    id: int
    remaining: Decimal
    effective_at: datetime
    expires_at: datetime | None

    def draw_down_order(self) -> tuple:
        """Earliest expiry first, no expiry last; then oldest first."""
        expiry = self.expires_at or self.effective_at  # unused when there is no expiry
        return (self.expires_at is None, expiry, self.effective_at, self.id)

    def active_at(self, instant: datetime) -> bool:
        return self.effective_at <= instant and (
            self.expires_at is None or instant < self.expires_at
        )


def _lock_grants(subscription, moves: list[_PeriodMove]) -> list[_Grant]:
    """Lock the grants with credits left that any of these events may draw on (by id), and
    return them in draw-down order: earliest expiry first, no expiry last, then oldest."""
    times = [item.timestamp for move in moves for item in move.charges]
    table = CreditGrant._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, credits + credits_adjusted - credits_used - credits_lapsed, "  # noqa: S608
            f"effective_at, expires_at FROM {table} "
            "WHERE subscription_id = %s AND effective_at <= %s "
            "AND (expires_at IS NULL OR expires_at > %s) "
            "AND credits_used + credits_lapsed < credits + credits_adjusted "
            "ORDER BY id FOR UPDATE",
            [subscription.pk, max(times), min(times)],
        )
        grants = [_Grant(pk, _credits(left), start, end) for pk, left, start, end in cursor]
    return sorted(grants, key=_Grant.draw_down_order)


def _split(subscription, item: Charge, counters: _Counters, grants, drawn) -> None:
    """Draw one event's credits: base, then grants in order, then excess (soft mode).

    The period's own usage (all but grants: base, excess and adjustments) may not go beyond
    the allocation (plus the allowance in soft mode), as before grants existed: a refund by
    adjustment makes room again, and an allocation lowered below usage stops it.
    """
    own = counters.used - counters.granted
    base = min(item.credits, max(subscription.base_allocation - own, Decimal(0)))
    rest = item.credits - base
    taken = []
    for grant in grants:
        if rest <= 0:
            break
        if grant.remaining > 0 and grant.active_at(item.timestamp):
            take = min(rest, grant.remaining)
            taken.append((grant, take))
            rest -= take
    cap = subscription.credit_cap  # allocation (+ allowance in soft mode)
    if own + base + rest > cap:
        available = sum((g.remaining for g in grants if g.active_at(item.timestamp)), Decimal(0))
        raise _DoesNotFit(
            errors.CreditLimitExceeded(
                limit=str(cap + counters.granted + available),
                used=str(counters.used),
                credits=str(item.credits),
            )
        )
    for grant, take in taken:
        grant.remaining -= take
        drawn[grant.id] += take
    item.grant = sum((take for _, take in taken), Decimal(0))
    item.excess = rest
    counters.used += item.credits
    counters.granted += item.grant
    counters.excess += item.excess


def _write_period(subscription, move: _PeriodMove) -> tuple[Decimal, Decimal]:
    """Add the split to the (locked) period, checking its own usage against its cap once more;
    the (used, excess used) after."""
    credits = sum((item.credits for item in move.charges), Decimal(0))
    granted = sum((item.grant for item in move.charges), Decimal(0))
    excess = sum((item.excess for item in move.charges), Decimal(0))
    table = BillingPeriod._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET credits_used = credits_used + %(x)s, "  # noqa: S608
            "grant_used = grant_used + %(granted)s, excess_used = excess_used + %(excess)s "
            "WHERE subscription_id = %(subscription)s AND id = %(id)s"
            " AND (%(own)s = 0 OR credits_used - grant_used + %(own)s <= %(cap)s) "
            "RETURNING credits_used, excess_used",
            {
                "x": credits,
                "granted": granted,
                "excess": excess,
                "own": credits - granted,
                "cap": subscription.credit_cap,
                "subscription": subscription.pk,
                "id": move.charges[0].period.pk,
            },
        )
        row = cursor.fetchone()
    if row is None:  # the counters moved under a lock we hold: never expected
        raise _DoesNotFit(errors.CreditLimitExceeded(limit="", used="", credits=str(credits)))
    return _credits(row[0]), _credits(row[1])


def _write_grants(subscription, drawn: dict[int, Decimal]) -> None:
    """Add what each grant gave to its ``credits_used``: one conditional statement for all."""
    rows = [(grant_id, credits) for grant_id, credits in sorted(drawn.items()) if credits > 0]
    if not rows:
        return
    table = CreditGrant._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} g SET credits_used = g.credits_used + v.take "  # noqa: S608
            f"FROM (VALUES {', '.join(['(%s::bigint, %s::numeric)'] * len(rows))}) v(id, take) "
            "WHERE g.subscription_id = %s AND g.id = v.id "
            "AND g.credits_used + v.take <= g.credits + g.credits_adjusted - g.credits_lapsed "
            "RETURNING g.id",
            [*(value for row in rows for value in row), subscription.pk],
        )
        if len(cursor.fetchall()) != len(rows):
            raise _DoesNotFit(errors.CreditLimitExceeded(limit="", used="", credits=""))


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


def _credits(value) -> Decimal:
    """A counter read back from SQL, at the ledger's four places."""
    return Decimal(str(value)).quantize(CREDIT_PLACES)
