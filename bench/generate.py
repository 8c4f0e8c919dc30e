"""Load a realistic Creditdesk data set with PostgreSQL COPY, and derive everything else in SQL.

What it builds, for N events:

* subscriptions (about one per 5,000 events, 10 to 2,000) in ten time zones, whose sizes follow
  a Zipf law: the largest customer has a large share of the traffic, the long tail a little;
* per subscription: projects and environments, users (a Zipf-sized head count, each a member
  of one "home" environment, the first one the subscription admin), teams, agents, one API key
  per environment, the products enabled;
* the ledger, in time order over the last 365 days (growing towards today, with a daily
  rhythm), with Zipf-skewed users, agents, models, products and features, and lognormal
  credits; written with ``COPY ... FROM STDIN``;
* billing periods for every month of the range in each subscription's own time zone (computed
  with ``zoneinfo``, the product's period math), and then, set-based from the ledger:
  ``DailyUsage`` rollups (local day = ``timestamp AT TIME ZONE subscription.timezone``), the
  period, user, team and key counters, one ``IdempotencyRecord`` per event, and the reset notice of
  every past period marked as sent.

Every event fits its subscription's allocation (no excess credits), so the counters are simply
the ledger's sums. The generator only adds: it never touches rows it did not create, so it can
run against a database with other data (the smoke test runs it in the test database).

Foreign-key triggers are switched off for the loading session (``session_replication_role``)
because 8 deferred FK checks per ledger row would dominate a 10M-row load; the rows are
consistent by construction and the smoke test checks it.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import itertools
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from credits.bulk import copy_rows, derive_from_ledger, drop_indexes
from credits.ledger_columns import LEDGER_COLUMNS
from credits.periods import month_bounds, month_start, next_month_start, previous_month_start

TIMEZONES = (
    "UTC",
    "Europe/Prague",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)
PRODUCTS = (
    ("ai-agent", "AI agent"),
    ("writing-assistant", "Writing assistant"),
    ("search", "AI search"),
    ("code-review", "Code review"),
)
MODELS = (
    "gpt-5-mini",
    "gpt-5",
    "claude-sonnet-4",
    "claude-haiku-4",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "llama-4-maverick",
    "mistral-large",
    "gpt-4.1-nano",
    "claude-opus-4",
    "deepseek-v3",
    "qwen3-235b",
)
FEATURES = ("chat", "summarise", "draft", "classify", "extract", "translate")
ENVIRONMENTS = ("Production", "Staging", "Development")
PLANS = ("free", "pro", "premium", "scale")
DAYS = 365
BENCH_PASSWORD = "bench-password-not-secret"  # noqa: S105 - a benchmark fixture, not a secret
ADMINS_GROUP = "Subscription admins"
PERIOD_OPENED = "period_opened"
NULL = "\\N"  # COPY's text format
LEDGER_INDEX_THRESHOLD = 500_000  # above this, drop and rebuild the ledger's indexes


_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[generate {time.monotonic() - _STARTED:6.1f}s] {message}", flush=True)


def zipf_cumulative(count: int, exponent: float) -> list[float]:
    return list(itertools.accumulate(1 / (rank**exponent) for rank in range(1, count + 1)))


def zipf_pick(cumulative: list[float], rng: random.Random) -> int:
    return bisect.bisect_right(cumulative, rng.random() * cumulative[-1])


@dataclass
class SubscriptionPlan:
    id: int
    rank: int
    timezone: str
    environment_ids: list[int] = field(default_factory=list)
    environment_key: dict[int, str] = field(default_factory=dict)  # environment -> api key id
    user_ids: list[int] = field(default_factory=list)
    user_home: dict[int, int] = field(default_factory=dict)  # user -> environment
    user_agent: dict[int, int] = field(default_factory=dict)  # user -> favourite agent
    agent_model: dict[int, str] = field(default_factory=dict)
    user_weights: list[float] = field(default_factory=list)
    agent_ids: list[int] = field(default_factory=list)
    agent_weights: list[float] = field(default_factory=list)
    period_starts: list[float] = field(default_factory=list)  # epoch seconds, ascending
    period_ids: list[int] = field(default_factory=list)


@dataclass
class Generated:
    subscription_ids: list[int]
    events: int
    seconds: float


class _Ids:
    """Hands out explicit primary keys above what each table already holds."""

    def __init__(self, cursor):
        self.cursor = cursor
        self.next: dict[str, int] = {}

    def take(self, table: str, count: int) -> range:
        if table not in self.next:
            self.cursor.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}")
            self.next[table] = self.cursor.fetchone()[0]
        start = self.next[table]
        self.next[table] += count
        return range(start, start + count)

    def sync_sequences(self) -> None:
        for table in self.next:
            self.cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
            )


def subscription_count(events: int) -> int:
    return max(10, min(2000, events // 5000))


def generate(
    connection,
    *,
    events: int,
    subscriptions: int | None = None,
    seed: int = 7,
    now: datetime | None = None,
    label: str = "Bench",
    days: int = DAYS,
    commit: bool = True,
    progress: Callable[[str], None] = log,
) -> Generated:
    """Load ``events`` ledger rows and everything around them through ``connection``
    (a psycopg 3 connection). ``commit=False`` leaves the transaction to the caller (tests)."""
    started = time.monotonic()
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    subscriptions = subscriptions or subscription_count(events)
    range_start = now - timedelta(days=days)
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute("SET work_mem = '256MB'")
        ids = _Ids(cursor)
        product_ids = _products(cursor)
        plans = _world(cursor, ids, rng, subscriptions, product_ids, now, range_start, label)
        _periods(cursor, ids, plans, range_start, now)
        if commit:
            connection.commit()
        progress(
            f"{len(plans)} subscriptions, {sum(len(p.user_ids) for p in plans)} users, "
            f"{sum(len(p.agent_ids) for p in plans)} agents; loading {events:,} events"
        )
        first_event_id = ids.take("credits_creditevent", 0).start
        rebuild_indexes = events >= LEDGER_INDEX_THRESHOLD
        dropped = drop_indexes(cursor, "credits_creditevent") if rebuild_indexes else []
        _ledger(cursor, plans, product_ids, rng, events, days, now, label, progress)
        if dropped:
            progress(f"rebuilding {len(dropped)} ledger indexes")
            for statement in dropped:
                cursor.execute(statement)
        if commit:
            connection.commit()
        subscription_ids = [plan.id for plan in plans]
        progress("deriving rollups, counters, idempotency records and notices (set-based SQL)")
        derived = ("credits_dailyusage", "credits_idempotencyrecord")
        dropped = (
            [statement for table in derived for statement in drop_indexes(cursor, table)]
            if rebuild_indexes
            else []
        )
        _derive(cursor, subscription_ids, first_event_id, progress)
        if dropped:
            progress(f"rebuilding {len(dropped)} rollup and idempotency indexes")
            for statement in dropped:
                cursor.execute(statement)
        ids.sync_sequences()
        cursor.execute("SET session_replication_role = DEFAULT")
        if commit:
            connection.commit()
            for table in _ANALYZED:
                cursor.execute(f"ANALYZE {table}")
            connection.commit()
    seconds = time.monotonic() - started
    progress(f"done: {events:,} events in {seconds:.1f} s")
    return Generated(subscription_ids=subscription_ids, events=events, seconds=seconds)


_ANALYZED = (
    "accounts_subscription",
    "accounts_user",
    "accounts_membership",
    "accounts_environment",
    "credits_billingperiod",
    "credits_creditevent",
    "credits_dailyusage",
    "credits_personrollup",
    "credits_agentrollup",
    "credits_subscriptionrollup",
    "credits_productrollup",
    "credits_modelrollup",
    "credits_agentsessionday",
    "credits_idempotencyrecord",
    "credits_userperiodusage",
    "credits_teamperiodusage",
    "credits_thresholdalert",
)


def _products(cursor) -> list[int]:
    for slug, name in PRODUCTS:
        cursor.execute(
            "INSERT INTO credits_product (slug, name) VALUES (%s, %s) "
            "ON CONFLICT (slug) DO NOTHING",
            [slug, name],
        )
    cursor.execute(
        "SELECT id FROM credits_product WHERE slug = ANY(%s) ORDER BY array_position(%s, slug)",
        [[slug for slug, _ in PRODUCTS], [slug for slug, _ in PRODUCTS]],
    )
    return [row[0] for row in cursor.fetchall()]


def _password_hash() -> str:
    from django.contrib.auth.hashers import make_password

    return make_password(BENCH_PASSWORD)


def _world(cursor, ids, rng, count, product_ids, now, range_start, label) -> list[SubscriptionPlan]:
    """Subscriptions and everything they own, with explicit ids, by COPY."""
    created_at = range_start - timedelta(days=40)
    subscription_ids = ids.take("accounts_subscription", count)
    plans = [
        SubscriptionPlan(id=sid, rank=rank, timezone=TIMEZONES[rank % len(TIMEZONES)])
        for rank, sid in enumerate(subscription_ids, start=1)
    ]
    tag = f"{label}-{subscription_ids.start}"
    copy_rows(
        cursor,
        "accounts_subscription",
        (
            "id",
            "name",
            "plan",
            "timezone",
            "base_allocation",
            "limit_mode",
            "excess_allowance",
            "created_at",
        ),
        (
            (
                p.id,
                f"{label} customer {p.rank} ({tag})",
                _plan(p.rank, count),
                p.timezone,
                0,
                "soft" if p.rank % 4 == 0 else "hard",
                0,
                created_at,
            )
            for p in plans
        ),
    )
    copy_rows(
        cursor,
        "credits_product_enabled_for",
        ("product_id", "subscription_id"),
        ((product, p.id) for p in plans for product in product_ids),
    )
    projects, environments, users, memberships, admins = [], [], [], [], []
    teams, team_members, agents, keys = [], [], [], []
    password = _password_hash()
    for p in plans:
        size = 1 / math.sqrt(p.rank)
        project_count = 1 + rng.randrange(3)
        for project_id in ids.take("accounts_project", project_count):
            projects.append((project_id, p.id, f"Project {project_id}"))
            for name in ENVIRONMENTS[: 1 + rng.randrange(3)]:
                environment_id = ids.take("accounts_environment", 1).start
                public_id = str(uuid.uuid4())  # unique across runs, whatever the seed
                environments.append((environment_id, p.id, project_id, name, public_id))
                p.environment_ids.append(environment_id)
                # The secret is thrown away: figures create their own keys through the service.
                prefix = uuid.uuid4().hex[:8]
                hashed = "sha512$$" + hashlib.sha512(_token(rng, 41).encode()).hexdigest()
                key_id = f"{prefix}.{hashed}"
                keys.append(
                    (key_id, prefix, hashed, now, f"{name} key", False, p.id, environment_id)
                )
                p.environment_key[environment_id] = key_id
        user_count = max(3, min(400, int(400 * size)))
        environment_weights = zipf_cumulative(len(p.environment_ids), 1.2)
        for index, user_id in enumerate(ids.take("accounts_user", user_count)):
            users.append(
                (
                    user_id,
                    password,
                    f"u{user_id}@s{p.id}.bench.example",
                    f"User {user_id}",
                    index == 0,
                    True,
                    False,
                    created_at,
                )
            )
            home = p.environment_ids[zipf_pick(environment_weights, rng)]
            p.user_ids.append(user_id)
            p.user_home[user_id] = home
            if index == 0:
                memberships.append((user_id, p.id, None, "subscription_admin", created_at))
                admins.append(user_id)
            memberships.append((user_id, p.id, home, "member", created_at))
        p.user_weights = zipf_cumulative(user_count, 1.0)
        agent_count = max(2, min(60, int(60 * size)))
        p.agent_weights = zipf_cumulative(agent_count, 1.1)
        in_teams = p.user_ids[1 : 1 + user_count // 2]
        for start in range(0, len(in_teams), 8):
            team_id = ids.take("accounts_team", 1).start
            teams.append((team_id, p.id, f"Team {team_id}"))
            team_members.extend((p.id, team_id, user) for user in in_teams[start : start + 8])
        model_weights = zipf_cumulative(len(MODELS), 1.2)
        for agent_id in ids.take("credits_agent", agent_count):
            model = MODELS[zipf_pick(model_weights, rng)]
            agents.append((agent_id, p.id, f"agent-{agent_id}", "single_task", model, created_at))
            p.agent_ids.append(agent_id)
            p.agent_model[agent_id] = model
        for user_id in p.user_ids:
            p.user_agent[user_id] = p.agent_ids[zipf_pick(p.agent_weights, rng)]
    copy_rows(cursor, "accounts_project", ("id", "subscription_id", "name"), projects)
    copy_rows(
        cursor,
        "accounts_environment",
        ("id", "subscription_id", "project_id", "name", "public_id"),
        environments,
    )
    copy_rows(
        cursor,
        "accounts_user",
        (
            "id",
            "password",
            "email",
            "display_name",
            "is_staff",
            "is_active",
            "is_superuser",
            "date_joined",
        ),
        users,
    )
    copy_rows(
        cursor,
        "accounts_membership",
        ("user_id", "subscription_id", "environment_id", "role", "created_at"),
        memberships,
    )
    cursor.execute("SELECT id FROM auth_group WHERE name = %s", [ADMINS_GROUP])
    group = cursor.fetchone()
    if group:
        copy_rows(
            cursor,
            "accounts_user_groups",
            ("user_id", "group_id"),
            ((admin, group[0]) for admin in admins),
        )
    copy_rows(cursor, "accounts_team", ("id", "subscription_id", "name"), teams)
    copy_rows(
        cursor, "accounts_teammembership", ("subscription_id", "team_id", "user_id"), team_members
    )
    copy_rows(
        cursor,
        "credits_agent",
        ("id", "subscription_id", "name", "agent_type", "model", "created_at"),
        agents,
    )
    copy_rows(
        cursor,
        "accounts_apikey",
        (
            "id",
            "prefix",
            "hashed_key",
            "created",
            "name",
            "revoked",
            "subscription_id",
            "environment_id",
        ),
        keys,
    )
    return plans


def _plan(rank: int, count: int) -> str:
    """The biggest customers are on the biggest plans."""
    share = rank / count
    return (
        "scale"
        if share <= 0.05
        else "premium"
        if share <= 0.2
        else "pro"
        if share <= 0.6
        else "free"
    )


def _token(rng: random.Random, length: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(rng.choice(alphabet) for _ in range(length))


def _periods(cursor, ids, plans, range_start: datetime, now: datetime) -> None:
    """Every calendar month of the range, in each subscription's zone (the product's math)."""
    rows = []
    for p in plans:
        zone = ZoneInfo(p.timezone)
        month = previous_month_start(month_start(range_start.astimezone(zone).date()))
        last = month_start(now.astimezone(zone).date())
        while month <= last:
            bounds = month_bounds(month, zone)
            period_id = ids.take("credits_billingperiod", 1).start
            rows.append((period_id, p.id, bounds.start, bounds.end, 0, 0, bounds.start))
            p.period_starts.append(bounds.start.timestamp())
            p.period_ids.append(period_id)
            month = next_month_start(month)
    copy_rows(
        cursor,
        "credits_billingperiod",
        ("id", "subscription_id", "start", "end", "credits_used", "excess_used", "opened_at"),
        rows,
    )


def _day_counts(events: int, rng: random.Random, days: int) -> list[int]:
    """Events per day: growing towards today (about 3x over the year), with weekly dips."""
    weights = []
    start_weekday = rng.randrange(7)
    for day in range(days):
        growth = 1 + 2 * day / DAYS
        weekend = 0.55 if (start_weekday + day) % 7 in (5, 6) else 1.0
        weights.append(growth * weekend * rng.uniform(0.85, 1.15))
    total = sum(weights)
    counts = [int(events * w / total) for w in weights]
    counts[-1] += events - sum(counts)
    return counts


def _second_of_day(rng: random.Random) -> float:
    """A daily rhythm: most traffic in a working-hours bump, some all night."""
    if rng.random() < 0.7:
        return min(86_399.0, max(0.0, rng.gauss(14 * 3600, 3.5 * 3600)))
    return rng.random() * 86_400


def _ledger(cursor, plans, product_ids, rng, events, days, now, label, progress) -> None:
    subscription_weights = zipf_cumulative(len(plans), 1.1)
    model_weights = zipf_cumulative(len(MODELS), 1.2)
    product_weights = zipf_cumulative(len(product_ids), 1.5)
    credit_pool = [f"{min(5000.0, rng.lognormvariate(0.2, 1.0)):.4f}" for _ in range(4096)]
    latency_pool = [str(int(rng.lognormvariate(6.7, 0.6))) for _ in range(4096)]
    pick = rng.random
    horizon = now.timestamp() - 1
    recorded = now.isoformat()
    sequence = 0
    written = 0
    last_report = time.monotonic()
    day_counts = _day_counts(events, rng, days)
    columns = ", ".join(LEDGER_COLUMNS)
    with cursor.copy(f"COPY credits_creditevent ({columns}) FROM STDIN") as copy:
        for day_index, count in enumerate(day_counts):
            base = horizon - (days - day_index) * 86_400
            seconds = sorted(_second_of_day(rng) for _ in range(count))
            buffer = io.StringIO()
            write = buffer.write
            for offset in seconds:
                instant = min(base + offset, horizon)
                p = plans[zipf_pick(subscription_weights, rng)]
                period_id = p.period_ids[bisect.bisect_right(p.period_starts, instant) - 1]
                user = None
                if pick() < 0.9:
                    user = p.user_ids[zipf_pick(p.user_weights, rng)]
                    environment = p.user_home[user]
                else:
                    environment = p.environment_ids[int(pick() * len(p.environment_ids))]
                # People mostly run their favourite agent, and an agent mostly its own model.
                agent = None
                if pick() < 0.85:
                    agent = (
                        p.user_agent[user]
                        if user and pick() < 0.7
                        else p.agent_ids[zipf_pick(p.agent_weights, rng)]
                    )
                if agent and pick() < 0.85:
                    model = p.agent_model[agent]
                else:
                    model = MODELS[zipf_pick(model_weights, rng)]
                product = zipf_pick(product_weights, rng)
                feature = FEATURES[(2 * product + (pick() < 0.25)) % len(FEATURES)]
                credits = credit_pool[int(pick() * 4096)]
                tokens = int(float(credits) * 800)
                failed = pick() < 0.03
                latency = latency_pool[int(pick() * 4096)] if pick() < 0.97 else "\\N"
                sequence += 1
                stamp = datetime.fromtimestamp(instant, UTC).isoformat()
                write(
                    f"{stamp}\t{recorded}\tusage\t{p.id}\t{period_id}\t{environment}\t"
                    f"{user or NULL}\t{p.environment_key[environment]}\t{product_ids[product]}\t"
                    f"{agent or NULL}\t{model}\t{feature}\t{credits}\t0\t{tokens}\t{tokens // 4}\t"
                    f"{latency}\t{'failed' if failed else 'succeeded'}\t\t"
                    f"{label.lower()}-{sequence}\t\n"
                )
            copy.write(buffer.getvalue())
            written += count
            if time.monotonic() - last_report > 5 or day_index == days - 1:
                last_report = time.monotonic()
                progress(f"ledger {written:,}/{events:,} ({100 * written / max(1, events):.0f}%)")


def _derive(cursor, subscription_ids: list[int], first_event_id: int, progress) -> None:
    """Rollups, counters, idempotency records and sent notices, from the ledger, in SQL."""
    new = {"subs": subscription_ids, "first": first_event_id}
    progress("daily and narrow rollups, latency histograms, session claims; counters")
    derive_from_ledger(cursor, subscription_ids)
    progress("idempotency records")
    cursor.execute(
        """
        INSERT INTO credits_idempotencyrecord (subscription_id, key, payload_hash, created_at,
                                               event_id)
        SELECT subscription_id, idempotency_key,
               encode(sha256(convert_to(idempotency_key, 'UTF8')), 'hex'), recorded_at, id
        FROM credits_creditevent WHERE id >= %(first)s AND subscription_id = ANY(%(subs)s)
        """,
        new,
    )
    # Allocations with headroom: no period overspent, room left for the ingestion figures.
    cursor.execute(
        """
        UPDATE accounts_subscription s
        SET base_allocation = CEIL((COALESCE(m.peak, 0) * 3 + 100000) / 1000) * 1000,
            excess_allowance = CASE WHEN s.limit_mode = 'soft'
                THEN CEIL((COALESCE(m.peak, 0) + 10000) / 1000) * 100 ELSE 0 END
        FROM (SELECT subscription_id, MAX(credits_used) AS peak FROM credits_billingperiod
              WHERE subscription_id = ANY(%(subs)s) GROUP BY subscription_id) m
        WHERE s.id = m.subscription_id
        """,
        new,
    )
    # Every period that started after its subscription was created had its reset notice sent.
    cursor.execute(
        """
        INSERT INTO credits_thresholdalert (subscription_id, period_id, threshold, crossed_at,
                                            notified_at)
        SELECT p.subscription_id, p.id, %(opened)s, p.start, p.start
        FROM credits_billingperiod p JOIN accounts_subscription s ON s.id = p.subscription_id
        WHERE p.subscription_id = ANY(%(subs)s) AND s.created_at < p.start
        """,
        {**new, "opened": PERIOD_OPENED},
    )
