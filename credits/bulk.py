"""Bulk loads that bypass the recording service: rows written with ``COPY``, and what the
ledger implies derived from it with set-based SQL.

Used by the benchmark's generator (``bench.generate``) and the demo seed (``seed_demo``).
Both write ledger rows that keep every limit by construction; ``derive_from_ledger`` then
computes the rollups and the period, user and team counters from the ledger itself, so the
counters equal the ledger exactly (the recording service keeps them so one event at a time).
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from .models import (
    BillingPeriod,
    CreditEvent,
    DailyUsage,
    TeamPeriodUsage,
    UserPeriodUsage,
)
from .rollups import NARROW_ROLLUP_TABLES, derive_narrow_rollups

# What ``derive_from_ledger`` writes.
DERIVED_TABLES = (
    DailyUsage._meta.db_table,
    *NARROW_ROLLUP_TABLES,
    UserPeriodUsage._meta.db_table,
    TeamPeriodUsage._meta.db_table,
)


def copy_rows(cursor, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> int:
    """Write ``rows`` (tuples in the order of ``columns``) into ``table`` with ``COPY ... FROM
    STDIN``; return how many. ``cursor`` is a psycopg 3 cursor or Django's wrapper of one."""
    count = 0
    quoted = ", ".join(f'"{column}"' for column in columns)
    with cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


@contextmanager
def foreign_keys_checked_once(cursor, tables: list[str]) -> Iterator[None]:
    """Load ``tables`` without their foreign keys, then add the keys back as they were.

    Adding a foreign key checks every row in one join; kept in place, a key checks each
    inserted row on its own (deferred to the commit, which took a third of the demo's load).
    Needs the tables' owner (who runs the migrations); the tables are locked until the commit.
    The checks still pending in the transaction run first (altering a table, or one its keys
    point to, needs none pending), and the keys that wait for the commit wait again afterwards.
    (Dropping the indexes too, as ``bench.generate`` does for millions of rows, costs more than
    it saves at the demo's hundred thousand.)
    """
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    keys = [(table, key) for table in tables for key in _drop_foreign_keys(cursor, table)]
    yield
    for table, (name, definition) in keys:
        cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def _drop_foreign_keys(cursor, table: str) -> list[tuple[str, str]]:
    """Drop the table's foreign keys; return their names and definitions."""
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'f' AND conparentid = 0 ORDER BY conname",
        [table],
    )
    keys = cursor.fetchall()
    for name, _ in keys:
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    return keys


def drop_indexes(cursor, table: str) -> list[str]:
    """Drop the table's plain (non-constraint) indexes; return the statements that rebuild them."""
    cursor.execute(
        """
        SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.tablename = %s AND NOT EXISTS (
            SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
        """,
        [table],
    )
    rows = cursor.fetchall()
    for name, _ in rows:
        cursor.execute(f'DROP INDEX "{name}"')
    # A partitioned table's index reads "ON ONLY parent": rebuild it on every partition.
    return [definition.replace(" ON ONLY ", " ON ") for _, definition in rows]


def derive_from_ledger(cursor, subscription_ids: list[int]) -> None:
    """``DailyUsage``, the narrow rollups (``derive_narrow_rollups``) and the period, user and
    team counters of these subscriptions, from their ledger alone.

    The subscriptions must have no rollup rows and no user or team counters yet (a bulk load
    into new or empty subscriptions). Team counters are summed from the people's, as the
    recording service charges them: a person's usage counts for their team.
    """
    params = {"subscriptions": list(subscription_ids)}
    cursor.execute("SET LOCAL work_mem = '64MB'")  # sorts and hashes of a load, in memory
    ledger, subscription = CreditEvent._meta.db_table, "accounts_subscription"
    cursor.execute(
        f"""
        INSERT INTO {DailyUsage._meta.db_table} (
            day, subscription_id, period_id, environment_id, user_id, api_key_id, product_id,
            agent_id, model, feature, credits, excess_credits, runs, failed_runs, input_tokens,
            output_tokens, latency_ms_total, latency_samples, last_event_at)
        SELECT (e.timestamp AT TIME ZONE s.timezone)::date, e.subscription_id, e.period_id,
            e.environment_id, e.user_id, e.api_key_id, e.product_id, e.agent_id, e.model,
            e.feature, SUM(e.credits), SUM(e.excess_credits),
            COUNT(*) FILTER (WHERE e.kind = 'usage'),
            COUNT(*) FILTER (WHERE e.kind = 'usage' AND e.status = 'failed'),
            SUM(e.input_tokens), SUM(e.output_tokens), COALESCE(SUM(e.latency_ms), 0),
            COUNT(e.latency_ms), MAX(e.timestamp)
        FROM {ledger} e JOIN {subscription} s ON s.id = e.subscription_id
        WHERE e.subscription_id = ANY(%(subscriptions)s)
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
        """,  # noqa: S608 (our table names)
        params,
    )
    derive_narrow_rollups(cursor, subscription_ids)
    cursor.execute(
        f"""
        UPDATE {BillingPeriod._meta.db_table} p
        SET credits_used = COALESCE(t.credits, 0), excess_used = COALESCE(t.excess, 0)
        FROM {BillingPeriod._meta.db_table} q
        LEFT JOIN (SELECT period_id, SUM(credits) AS credits, SUM(excess_credits) AS excess
                   FROM {ledger} WHERE subscription_id = ANY(%(subscriptions)s)
                   GROUP BY period_id) t ON t.period_id = q.id
        WHERE p.id = q.id AND q.subscription_id = ANY(%(subscriptions)s)
        """,  # noqa: S608
        params,
    )
    cursor.execute(
        f"""
        INSERT INTO {UserPeriodUsage._meta.db_table}
            (subscription_id, period_id, user_id, credits_used)
        SELECT subscription_id, period_id, user_id, SUM(credits) FROM {ledger}
        WHERE subscription_id = ANY(%(subscriptions)s) AND user_id IS NOT NULL
        GROUP BY subscription_id, period_id, user_id
        """,  # noqa: S608
        params,
    )
    cursor.execute(
        f"""
        INSERT INTO {TeamPeriodUsage._meta.db_table}
            (subscription_id, period_id, team_id, credits_used)
        SELECT u.subscription_id, u.period_id, m.team_id, SUM(u.credits_used)
        FROM {UserPeriodUsage._meta.db_table} u
        JOIN accounts_teammembership m ON m.user_id = u.user_id
            AND m.subscription_id = u.subscription_id
        WHERE u.subscription_id = ANY(%(subscriptions)s)
        GROUP BY u.subscription_id, u.period_id, m.team_id
        """,  # noqa: S608
        params,
    )
