"""Partition the ledger by month.

The table is rebuilt as ``PARTITION BY RANGE ("timestamp")`` with the same columns, checks,
foreign keys, indexes and append-only trigger. Its primary key becomes (id, timestamp), as
PostgreSQL requires the partition key in every unique constraint; ids still come from one
sequence and stay unique. Monthly partitions cover the last 25 months and the next 3; a
default partition catches anything else; a periodic task keeps creating months ahead
(``credits.partitions.ensure_ledger_partitions``).
"""

from datetime import UTC, date, datetime, timedelta

from django.db import migrations

LEDGER = "credits_creditevent"
OLD = f"{LEDGER}_unpartitioned"


def _month_starts(today: date, back: int, ahead: int) -> list[date]:
    month = today.replace(day=1)
    for _ in range(back):
        month = (month - timedelta(days=1)).replace(day=1)
    months = []
    for _ in range(back + ahead + 1):
        months.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return months


def partition(apps, schema_editor):
    CreditEvent = apps.get_model("credits", "CreditEvent")
    run = schema_editor.execute
    run(f"DROP TRIGGER IF EXISTS credits_creditevent_append_only ON {LEDGER}")
    run(f"ALTER TABLE {LEDGER} RENAME TO {OLD}")
    run(f"ALTER TABLE {OLD} ALTER COLUMN id DROP IDENTITY")  # frees the sequence's name
    run(
        f"CREATE TABLE {LEDGER} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        'PARTITION BY RANGE ("timestamp")'
    )
    run(f"CREATE SEQUENCE {LEDGER}_id_seq AS bigint OWNED BY {LEDGER}.id")
    run(f"ALTER TABLE {LEDGER} ALTER COLUMN id SET DEFAULT nextval('{LEDGER}_id_seq')")
    today = datetime.now(tz=UTC).date()
    for month in _month_starts(today, back=25, ahead=3):
        following = (month + timedelta(days=32)).replace(day=1)
        run(
            f'CREATE TABLE "{LEDGER}_y{month:%Y}m{month:%m}" PARTITION OF {LEDGER} '
            f"FOR VALUES FROM ('{month.isoformat()}T00:00:00+00:00') "
            f"TO ('{following.isoformat()}T00:00:00+00:00')"
        )
    run(f"CREATE TABLE {LEDGER}_default PARTITION OF {LEDGER} DEFAULT")
    run(f"INSERT INTO {LEDGER} SELECT * FROM {OLD}")
    run(f"SELECT setval('{LEDGER}_id_seq', (SELECT COALESCE(max(id), 0) + 1 FROM {OLD}), false)")
    run(f"DROP TABLE {OLD}")  # with it go the old indexes, whose names we reuse
    run(f'ALTER TABLE {LEDGER} ADD CONSTRAINT {LEDGER}_pkey PRIMARY KEY (id, "timestamp")')
    for field in CreditEvent._meta.concrete_fields:
        if field.remote_field:
            target = field.remote_field.model._meta
            run(
                f"ALTER TABLE {LEDGER} ADD CONSTRAINT {LEDGER}_{field.column}_fk "
                f'FOREIGN KEY ("{field.column}") REFERENCES "{target.db_table}" '
                f'("{target.pk.column}") DEFERRABLE INITIALLY DEFERRED'
            )
    for index in CreditEvent._meta.indexes:
        schema_editor.add_index(CreditEvent, index)
    run(
        "CREATE TRIGGER credits_creditevent_append_only BEFORE UPDATE OR DELETE ON "
        f"{LEDGER} FOR EACH ROW EXECUTE FUNCTION creditdesk_ledger_append_only()"
    )


class Migration(migrations.Migration):
    # One transaction: the ledger is either converted whole or not at all.
    atomic = True

    dependencies = [("credits", "0005_ledger_indexes")]

    operations = [migrations.RunPython(partition, migrations.RunPython.noop, elidable=False)]
