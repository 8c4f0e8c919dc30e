"""The ledger is partitioned by month on PostgreSQL; partitions are made ahead and archived."""

import gzip
from datetime import date
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum

from credits.models import BillingPeriod, CreditEvent, DailyUsage
from credits.partitions import monthly_partitions
from credits.tasks import create_ledger_partitions
from tests.factories import utc

pytestmark = pytest.mark.django_db


def partition_of(event) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM credits_creditevent WHERE id = %s", [event.pk]
        )
        return cursor.fetchone()[0]


def record(key_client, event_payload, *, timestamp, credits="1"):
    response = key_client.post(
        "/api/v1/events/", event_payload(timestamp=timestamp, credits=credits), format="json"
    )
    assert response.status_code == 201, response.json()
    return CreditEvent.objects.get(pk=response.json()["event"]["id"])


def test_events_land_in_the_partition_of_their_utc_month(world, key_client, event_payload):
    with time_machine.travel(utc(2026, 11, 1, 0, 30), tick=False):
        # 23:30 UTC on 31 October is already 1 November in Prague: November's billing period,
        # but October's UTC partition.
        event = record(key_client, event_payload, timestamp="2026-10-31T23:30:00Z")

    assert partition_of(event) == "credits_creditevent_y2026m10"
    assert event.period.start == utc(2026, 10, 31, 23)


def test_the_periodic_task_creates_the_coming_months_once():
    # Long after any day the suite runs on: the migration already made the months around the
    # day the test database was created (from June 2027 on, 2027's would exist already).
    with time_machine.travel(utc(2090, 6, 15), tick=False):
        created = create_ledger_partitions()
        again = create_ledger_partitions()

    assert "credits_creditevent_y2090m09" in created
    assert again == []
    assert {date(2090, month, 1) for month in (6, 7, 8, 9)} <= set(monthly_partitions().values())


def test_events_outside_every_month_go_to_the_default_partition(world):
    period = BillingPeriod.objects.create(
        subscription=world.subscription, start=utc(2040, 1, 1), end=utc(2040, 2, 1)
    )
    event = CreditEvent.objects.create(
        timestamp=utc(2040, 1, 2), subscription=world.subscription, period=period, credits=1
    )

    assert partition_of(event) == "credits_creditevent_default"


def test_archiving_detaches_old_months_and_keeps_current_data(
    world, key_client, event_payload, tmp_path, settings
):
    settings.MEDIA_ROOT = str(tmp_path)
    with time_machine.travel(utc(2026, 10, 1, 12), tick=False):
        old = record(key_client, event_payload, timestamp="2026-09-30T21:00:00Z", credits="2")
    with time_machine.travel(utc(2026, 11, 23, 12), tick=False):
        current = record(key_client, event_payload, timestamp="2026-11-23T11:00:00Z")
    rollups_before = DailyUsage.objects.aggregate(total=Sum("credits"))["total"]

    with connection.cursor() as cursor:
        # The test runs in one transaction: check its deferred foreign keys now, as a commit
        # would, so that the partition has no pending trigger events when it is dropped.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    out = StringIO()
    call_command("archive_ledger_partitions", "--before", "2026-10", stdout=out)

    assert "credits_creditevent_y2026m09" not in monthly_partitions()
    assert "credits_creditevent_y2026m10" in monthly_partitions()
    assert list(CreditEvent.objects.values_list("pk", flat=True)) == [current.pk]
    archive = gzip.decompress(
        (tmp_path / "ledger-archive" / "credits_creditevent_y2026m09.csv.gz").read_bytes()
    ).decode()
    assert archive.splitlines()[0].startswith("id,timestamp,")
    assert f"\n{old.pk}," in archive
    assert "Archived credits_creditevent_y2026m09: 1 rows" in out.getvalue()
    # Rollups and period counters keep the archived month's usage.
    assert DailyUsage.objects.aggregate(total=Sum("credits"))["total"] == rollups_before
    assert BillingPeriod.objects.get(start=utc(2026, 8, 31, 22)).credits_used == Decimal("2")


def test_a_dry_run_archives_nothing():
    before = set(monthly_partitions())

    out = StringIO()
    call_command("archive_ledger_partitions", "--before", "2026-01", "--dry-run", stdout=out)

    assert set(monthly_partitions()) == before
    assert "Would archive" in out.getvalue()
