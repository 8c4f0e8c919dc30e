"""Bulk loads that bypass the recording service: rows written with ``COPY``, and what the
ledger implies derived from it with set-based SQL.

Used by the benchmark's generator (``bench.generate``) and the demo seed (``seed_demo``).
Both write ledger rows that keep every limit by construction; ``derive_from_ledger`` then
computes the rollups and the period, user, team and API key counters from the ledger itself,
so the counters equal the ledger exactly (the recording service keeps them so one event at a
time).
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from psycopg import sql

from .models import AgentSessionDay, ApiKeyPeriodUsage, TeamPeriodUsage, UserPeriodUsage
from .rollups import ROLLUPS, derive_rollups

# What ``derive_from_ledger`` writes.
DERIVED_TABLES = tuple(
    model._meta.db_table
    for model in (
        *(rollup.model for rollup in ROLLUPS),
        AgentSessionDay,
        UserPeriodUsage,
        TeamPeriodUsage,
        ApiKeyPeriodUsage,
    )
)


def copy_rows(cursor, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> int:
    """Write ``rows`` (tuples in the order of ``columns``) into ``table`` with ``COPY ... FROM
    STDIN``; return how many. ``cursor`` is a psycopg 3 cursor or Django's wrapper of one."""
    count = 0
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with cursor.copy(statement.as_string(None)) as copy:
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
        add = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)
        )
        cursor.execute(add.as_string(None))
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
        drop = sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}")
        cursor.execute(drop.format(sql.Identifier(table), sql.Identifier(name)).as_string(None))
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
        cursor.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)).as_string(None))
    # A partitioned table's index reads "ON ONLY parent": rebuild it on every partition.
    return [definition.replace(" ON ONLY ", " ON ") for _, definition in rows]


def derive_from_ledger(cursor, subscription_ids: list[int]) -> None:
    """The rollups and the period, user, team and key counters of these newly loaded
    subscriptions, from their ledger alone (``credits.rollups.derive_rollups``), with the
    memory a load's sorts and hashes need. The subscriptions must have none of those rows yet."""
    cursor.execute("SET LOCAL work_mem = '64MB'")
    derive_rollups(cursor, subscription_ids)
