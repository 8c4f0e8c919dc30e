"""Writing usage events: the ledger rows, their idempotency keys and every rollup in one
statement (one round trip for one event or a batch of a thousand)."""

from functools import cache

from django.db import connection
from django.utils import timezone
from psycopg import sql

from .models import CreditEvent, IdempotencyRecord
from .rollups import LEDGER_TYPES, latency_bucket, rollup_ctes

# What a usage event's row holds besides the columns the rollups read.
_ALSO_STORED = {"idempotency_key": "varchar"}
# ``SET LOCAL plan_cache_mode = force_generic_plan`` as an expression, for the statement that
# comes before ``add_to_ledger``'s in its transaction (the claim), to save a round trip. Its
# statement is prepared once per connection, yet PostgreSQL planned it anew on every run
# (custom plans: 0 generic, ~318 custom), which cost more than the run; the setting ends with
# the transaction.
GENERIC_PLANS = "set_config('plan_cache_mode', 'force_generic_plan', true)"


def add_to_ledger(events: list[CreditEvent], *, zone) -> list[CreditEvent]:
    """Insert new usage events (unsaved, each with its own idempotency key, claimed by this
    transaction), point their keys at them and add them to every rollup.

    Must run in the transaction that charged their periods (see ``rollups.add_to_rollups`` for
    why the rollup upserts cannot deadlock), after a statement that selected ``GENERIC_PLANS``.
    Sets each event's id and ``recorded_at``.
    """
    if not events:
        return events
    recorded_at = timezone.now()
    params = {
        column: [getattr(event, column) for event in events]
        for column in (*LEDGER_TYPES, *_ALSO_STORED)
    }
    params["bucket"] = [
        None if event.latency_ms is None else latency_bucket(event.latency_ms) for event in events
    ]
    subscription_id = events[0].subscription_id
    with connection.cursor() as cursor:
        cursor.execute(
            _statement(),
            {
                **params,
                "zone": zone.key,
                "recorded_at": recorded_at,
                "subscription": subscription_id,
            },
        )
        ids = dict(cursor.fetchall())
    for event in events:
        event.pk, event.recorded_at = ids[event.idempotency_key], recorded_at
        event._state.adding, event._state.db = False, connection.alias
    return events


@cache
def _statement() -> str:
    """``l``: the new events (one array per column); ``inserted``: their ledger rows;
    ``linked``: their keys; ``e`` and the rollup CTEs: every rollup."""
    types = {**LEDGER_TYPES, **_ALSO_STORED, "bucket": "integer"}
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(column), sql.SQL(kind))
        for column, kind in types.items()
    )
    stored = (*LEDGER_TYPES, *_ALSO_STORED)
    names = sql.SQL(", ").join(map(sql.Identifier, stored))
    parts = [
        sql.SQL("l ({}) AS (SELECT * FROM unnest({}))").format(
            sql.SQL(", ").join(map(sql.Identifier, types)), arrays
        ),
        sql.SQL(
            "inserted AS (INSERT INTO {ledger} ({names}, recorded_at, reason) "
            "SELECT {names}, %(recorded_at)s, '' FROM l RETURNING idempotency_key, id)"
        ).format(ledger=sql.Identifier(CreditEvent._meta.db_table), names=names),
        sql.SQL(
            "linked AS (UPDATE {keys} k SET event_id = i.id FROM inserted i "
            "WHERE k.subscription_id = %(subscription)s AND k.key = i.idempotency_key)"
        ).format(keys=sql.Identifier(IdempotencyRecord._meta.db_table)),
        sql.SQL(
            "e AS (SELECT l.*, (l.timestamp AT TIME ZONE %(zone)s)::date AS local_day, "
            "date_trunc('hour', l.timestamp, %(zone)s) AS local_hour FROM l)"
        ),
        *rollup_ctes(adding=True),
    ]
    statement = sql.SQL("WITH {} SELECT idempotency_key, id FROM inserted").format(
        sql.SQL(", ").join(parts)
    )
    return statement.as_string(None)
