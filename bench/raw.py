"""The baselines: PostgreSQL doing the recording service's writes, driven by plain psycopg.

Per event, in one transaction, the same statements as ``credits/recording.py``: claim the
idempotency key, charge the period with the conditional update, charge the team, user and API
key counters (upserts with the same guards), insert the ledger row, point the idempotency record
at it, upsert the daily rollup. What it leaves out is what the product adds on top: HTTP,
authentication, validation, resolving names to ids, the response and its balance.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from credits.ledger_columns import LEDGER_COLUMNS, ROLLUP_COLUMNS, ROLLUP_SUMS

from .catalog import Event

CLAIM = (
    "INSERT INTO credits_idempotencyrecord (subscription_id, key, payload_hash, created_at) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (subscription_id, key) DO NOTHING RETURNING id"
)
CHARGE = (
    "UPDATE credits_billingperiod SET credits_used = credits_used + %(x)s, "
    "excess_used = excess_used"
    " + CASE WHEN credits_used + %(x)s > %(allocation)s"
    "   THEN credits_used + %(x)s - %(allocation)s ELSE 0 END"
    " - CASE WHEN credits_used > %(allocation)s"
    "   THEN credits_used - %(allocation)s ELSE 0 END "
    "WHERE id = %(id)s AND credits_used + %(x)s <= %(cap)s "
    "RETURNING credits_used, excess_used"
)
TEAM = (
    "INSERT INTO credits_teamperiodusage (subscription_id, period_id, team_id, credits_used) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (subscription_id, period_id, team_id) DO UPDATE "
    "SET credits_used = credits_teamperiodusage.credits_used + EXCLUDED.credits_used "
    "RETURNING credits_used"
)
USER = (
    "INSERT INTO credits_userperiodusage (subscription_id, period_id, user_id, credits_used) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (subscription_id, period_id, user_id) DO UPDATE "
    "SET credits_used = credits_userperiodusage.credits_used + EXCLUDED.credits_used "
    "RETURNING credits_used"
)
KEY = (
    "INSERT INTO credits_apikeyperiodusage (subscription_id, period_id, api_key_id, credits_used) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (subscription_id, period_id, api_key_id) DO UPDATE "
    "SET credits_used = credits_apikeyperiodusage.credits_used + EXCLUDED.credits_used "
    "RETURNING credits_used"
)
LEDGER = (
    f"INSERT INTO credits_creditevent ({', '.join(LEDGER_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(LEDGER_COLUMNS))}) RETURNING id"
)
POINT = "UPDATE credits_idempotencyrecord SET event_id = %s WHERE subscription_id = %s AND key = %s"
ROLLUP = (
    f"INSERT INTO credits_dailyusage ({', '.join(ROLLUP_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(ROLLUP_COLUMNS))}) "
    "ON CONFLICT (subscription_id, day, COALESCE(environment_id, 0), COALESCE(user_id, 0), "
    "COALESCE(api_key_id, ''), COALESCE(product_id, 0), COALESCE(agent_id, 0), model, feature) "
    "DO UPDATE SET "
    + ", ".join(f"{c} = credits_dailyusage.{c} + EXCLUDED.{c}" for c in ROLLUP_SUMS)
    + ", last_event_at = GREATEST(credits_dailyusage.last_event_at, EXCLUDED.last_event_at)"
)


class Refused(Exception):
    pass


def _dimensions(event: Event) -> tuple:
    """The event's values of ``credits.ledger_columns.DIMENSIONS``."""
    return (
        event.actor.environment_id,
        event.actor.user_id,
        event.target.api_key_id or None,
        event.target.product_id,
        event.agent_id,
        event.body["model"],
        event.body["feature"],
    )


def _ledger_row(event: Event, now: datetime, excess: Decimal) -> tuple:
    body, target = event.body, event.target
    return (
        now,
        now,
        "usage",
        target.subscription_id,
        target.period_id,
        *_dimensions(event),
        event.credits,
        excess,
        body["input_tokens"],
        body["output_tokens"],
        body["latency_ms"],
        body["status"],
        "",
        body["idempotency_key"],
        "",
    )


def _rollup_row(event: Event, now: datetime, excess: Decimal) -> tuple:
    body, target = event.body, event.target
    return (
        now.astimezone(target.zone).date(),
        target.subscription_id,
        target.period_id,
        *_dimensions(event),
        event.credits,
        excess,
        1,
        int(body["status"] == "failed"),
        body["input_tokens"],
        body["output_tokens"],
        body["latency_ms"],
        1,
        now,
    )


def record_one(connection, event: Event) -> float:
    """Record one event in its own transaction; return the seconds it took."""
    started = time.perf_counter()
    target = event.target
    now = datetime.now(UTC)
    key = event.body["idempotency_key"]
    fingerprint = hashlib.sha256(event.json()).hexdigest()
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(CLAIM, (target.subscription_id, key, fingerprint, now))
        if cursor.fetchone() is None:
            raise Refused("key taken")
        cursor.execute(
            CHARGE,
            {
                "x": event.credits,
                "allocation": target.allocation,
                "cap": target.cap,
                "id": target.period_id,
            },
        )
        if cursor.fetchone() is None:
            raise Refused("credit_limit_exceeded")
        if event.actor.team_id:
            cursor.execute(
                TEAM,
                (target.subscription_id, target.period_id, event.actor.team_id, event.credits),
            )
        cursor.execute(
            USER, (target.subscription_id, target.period_id, event.actor.user_id, event.credits)
        )
        if target.api_key_id:
            cursor.execute(
                KEY, (target.subscription_id, target.period_id, target.api_key_id, event.credits)
            )
        cursor.execute(LEDGER, _ledger_row(event, now, Decimal(0)))
        event_id = cursor.fetchone()[0]
        cursor.execute(POINT, (event_id, target.subscription_id, key))
        cursor.execute(ROLLUP, _rollup_row(event, now, Decimal(0)))
    return time.perf_counter() - started


def record_batch(connection, events: list[Event]) -> tuple[int, float]:
    """Record a batch in one transaction, with the product's strategy: claims pipelined
    (``executemany``), each counter charged once with the batch's sum (the same conditional
    update), ledger rows by ``COPY``, keys pointed pipelined, one upsert per rollup row after
    summing the events that share it; return (accepted, seconds).

    The bench keeps allocations ample, so every batch fits; a refusal is counted, not handled
    one event at a time (the product's fallback when a batch does not fit).
    """
    started = time.perf_counter()
    now = datetime.now(UTC)
    periods, teams, users = defaultdict(Decimal), defaultdict(Decimal), defaultdict(Decimal)
    keys = defaultdict(Decimal)
    for e in events:
        periods[e.target.period_id, e.target.allocation, e.target.cap] += e.credits
        if e.actor.team_id:
            teams[e.target.subscription_id, e.target.period_id, e.actor.team_id] += e.credits
        users[e.target.subscription_id, e.target.period_id, e.actor.user_id] += e.credits
        if e.target.api_key_id:
            keys[e.target.subscription_id, e.target.period_id, e.target.api_key_id] += e.credits
    with connection.transaction(), connection.cursor() as cursor:
        cursor.executemany(
            CLAIM,
            [
                (e.target.subscription_id, e.body["idempotency_key"], e.fingerprint(), now)
                for e in events
            ],
        )
        for (period_id, allocation, cap), credits in sorted(periods.items()):
            cursor.execute(
                CHARGE, {"x": credits, "allocation": allocation, "cap": cap, "id": period_id}
            )
            if cursor.rowcount != 1:
                raise Refused("the batch does not fit")
        cursor.executemany(TEAM, [(*key, credits) for key, credits in sorted(teams.items())])
        cursor.executemany(USER, [(*key, credits) for key, credits in sorted(users.items())])
        cursor.executemany(KEY, [(*key, credits) for key, credits in sorted(keys.items())])
        columns = ", ".join(LEDGER_COLUMNS)
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('credits_creditevent', 'id')) "
            "FROM generate_series(1, %s)",
            [len(events)],
        )
        ids = [row[0] for row in cursor.fetchall()]
        with cursor.copy(f"COPY credits_creditevent (id, {columns}) FROM STDIN") as copy:
            for event_id, event in zip(ids, events, strict=True):
                copy.write_row((event_id, *_ledger_row(event, now, Decimal(0))))
        cursor.executemany(
            POINT,
            [
                (event_id, e.target.subscription_id, e.body["idempotency_key"])
                for event_id, e in zip(ids, events, strict=True)
            ],
        )
        cursor.executemany(ROLLUP, _summed_rollup_rows(events, now))
    return len(events), time.perf_counter() - started


def _summed_rollup_rows(events: list[Event], now: datetime) -> list[tuple]:
    """One row per rollup key, in key order: an upsert may touch a row once per statement."""
    keys = len(ROLLUP_COLUMNS) - len(ROLLUP_SUMS) - 1
    rows: dict[tuple, list] = {}
    for event in events:
        row = _rollup_row(event, now, Decimal(0))
        key, sums = row[:keys], row[keys:-1]
        if key in rows:
            rows[key] = [a + b for a, b in zip(rows[key], sums, strict=True)]
        else:
            rows[key] = list(sums)
    return [(*key, *sums, now) for key, sums in sorted(rows.items(), key=lambda kv: str(kv[0]))]
