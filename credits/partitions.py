"""The ledger's monthly partitions: created ahead, archived when old.

``credits_creditevent`` is partitioned by range of ``timestamp``, one partition per UTC month
(``credits_creditevent_y2026m11``), plus a default partition that catches anything outside
them so that an insert never fails for want of a partition. A periodic task creates the
partitions of the coming months; ``archive_ledger_partitions`` detaches old ones, writes them
to storage as gzipped CSV and drops them, without touching current data. Rollups and billing
periods are kept, so dashboards and reports of archived months still work; raw exports of
those months come from the archive files.
"""

import gzip
import logging
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.core.files import File
from django.core.files.storage import Storage, default_storage
from django.db import connection, transaction

from .periods import next_month_start

logger = logging.getLogger(__name__)

LEDGER = "credits_creditevent"
DEFAULT_PARTITION = f"{LEDGER}_default"
ARCHIVE_FOLDER = "ledger-archive"
_NAME = re.compile(rf"^{LEDGER}_y(\d{{4}})m(\d{{2}})$")


def partition_name(month: date) -> str:
    return f"{LEDGER}_y{month:%Y}m{month:%m}"


def is_partitioned() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_partitioned_table WHERE partrelid = %s::regclass", [LEDGER]
        )
        return cursor.fetchone() is not None


def monthly_partitions() -> dict[str, date]:
    """Attached monthly partitions by name, with the month each holds."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [LEDGER],
        )
        names = [row[0] for row in cursor.fetchall()]
    return {
        name: date(int(match[1]), int(match[2]), 1)
        for name in names
        if (match := _NAME.match(name))
    }


def ensure_ledger_partitions(*, now: datetime, months_ahead: int = 3) -> list[str]:
    """Create the partitions of this UTC month and the next ``months_ahead``; return new names.

    Idempotent. A month whose rows already sit in the default partition (beat was down for
    months) is skipped with an error in the log: creating it would fail, and those rows are
    safe where they are.
    """
    if not is_partitioned():
        return []
    existing = monthly_partitions()
    created = []
    month = now.astimezone(UTC).date().replace(day=1)
    for _ in range(months_ahead + 1):
        name = partition_name(month)
        if name not in existing:
            if _default_holds(month):
                logger.error("event=partition_skipped partition=%s reason=rows_in_default", name)
            else:
                _create_partition(month)
                created.append(name)
        month = next_month_start(month)
    if created:
        logger.info("event=partitions_created partitions=%s", ",".join(created))
    return created


@dataclass(frozen=True)
class Archived:
    partition: str
    rows: int
    path: str


def archive_ledger_partitions(
    *, before: date, storage: Storage | None = None, dry_run: bool = False, progress=None
) -> list[Archived]:
    """Detach, export and drop every monthly partition that ends on or before ``before``.

    Each partition is written to ``ledger-archive/<partition>.csv.gz`` (with a header row)
    before it is dropped, so a failure part-way leaves either an attached partition or a
    complete archive. Current partitions are never touched.
    """
    if not is_partitioned():
        return []
    storage = storage or default_storage
    done = []
    for name, month in sorted(monthly_partitions().items(), key=lambda item: item[1]):
        if next_month_start(month) > before:
            continue
        if dry_run:
            done.append(Archived(partition=name, rows=_count(name), path=""))
            continue
        with connection.cursor() as cursor:
            # A brief exclusive lock on the ledger: never queue behind a long transaction.
            cursor.execute("SET lock_timeout = '5s'")
            cursor.execute(f'ALTER TABLE {LEDGER} DETACH PARTITION "{name}"')
            cursor.execute("RESET lock_timeout")
        rows = _count(name)
        with tempfile.TemporaryFile() as archive:
            _export(name, archive)
            archive.seek(0)
            path = storage.save(f"{ARCHIVE_FOLDER}/{name}.csv.gz", File(archive))
        with connection.cursor() as cursor:
            cursor.execute(f'DROP TABLE "{name}"')
        done.append(Archived(partition=name, rows=rows, path=path))
        logger.info("event=partition_archived partition=%s rows=%s path=%s", name, rows, path)
        if progress:
            progress(done[-1])
    return done


def _create_partition(month: date) -> None:
    start = datetime.combine(month, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(next_month_start(month), datetime.min.time(), tzinfo=UTC)
    # Bounds are literals: DDL takes no parameters once the server binds them.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f'CREATE TABLE IF NOT EXISTS "{partition_name(month)}" PARTITION OF {LEDGER} '
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )


def _default_holds(month: date) -> bool:
    start = datetime.combine(month, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(next_month_start(month), datetime.min.time(), tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT 1 FROM "{DEFAULT_PARTITION}" '  # noqa: S608 - constant table name
            'WHERE "timestamp" >= %s AND "timestamp" < %s LIMIT 1',
            [start, end],
        )
        return cursor.fetchone() is not None


def _count(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{name}"')  # noqa: S608 - name from pg_class
        return cursor.fetchone()[0]


def _export(name: str, target) -> None:
    """Write the partition to ``target`` as gzipped CSV, streamed from ``COPY ... TO STDOUT``."""
    with gzip.GzipFile(fileobj=target, mode="wb") as archive, connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg 3's cursor, for COPY
        with raw.copy(f'COPY "{name}" TO STDOUT WITH (FORMAT csv, HEADER true)') as copy:
            for chunk in copy:
                archive.write(chunk)
