"""The ledger is append-only: corrections are new rows, never edits."""

from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction

from credits.models import BillingPeriod, CreditEvent
from tests.factories import utc

# On the real clock: also run at each pinned moment (tests/conftest.py).
pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]


@pytest.fixture
def event(world):
    period = BillingPeriod.objects.create(
        subscription=world.subscription, start=utc(2026, 10, 31, 23), end=utc(2026, 11, 30, 23)
    )
    return CreditEvent.objects.create(
        timestamp=utc(2026, 11, 2, 9),
        subscription=world.subscription,
        period=period,
        environment=world.environment,
        user=world.member,
        credits=Decimal("1.5000"),
    )


def test_saving_an_existing_event_is_refused(event):
    event.credits = Decimal(0)
    with pytest.raises(TypeError, match="append-only"):
        event.save()


def test_deleting_events_is_refused(event):
    with pytest.raises(TypeError, match="append-only"):
        event.delete()
    with pytest.raises(TypeError, match="append-only"):
        CreditEvent.objects.all().delete()
    with pytest.raises(TypeError, match="append-only"):
        CreditEvent.objects.update(credits=0)


def test_the_database_refuses_updates_and_deletes_too(event):
    for sql in (
        "UPDATE credits_creditevent SET credits = 0",
        "DELETE FROM credits_creditevent",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql)
    assert CreditEvent.objects.get().credits == Decimal("1.5000")
