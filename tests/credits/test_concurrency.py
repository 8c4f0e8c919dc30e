"""Limits and idempotency hold under real concurrent PostgreSQL transactions."""

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connections
from django.db.models import F, Sum
from rest_framework.test import APIClient

from credits.models import BillingPeriod, CreditEvent, CreditGrant, DailyUsage
from tests import factories
from tests.credits.conftest import set_allocation

# serialized_rollback restores what migrations created (the admins group) after a flush.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

CLIENTS = 50


def post_concurrently(secret, payloads):
    def post(payload):
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
            return client.post("/api/v1/events/", payload, format="json").status_code
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(post, payloads))


@pytest.fixture
def secret(world, product):
    return factories.api_key(world.subscription)[1]


def test_fifty_clients_near_the_hard_limit_never_overspend(world, secret, event_payload):
    set_allocation(world.subscription, "100")
    assert post_concurrently(secret, [event_payload(credits="80")]) == [201]

    statuses = post_concurrently(secret, [event_payload(credits="1") for _ in range(2 * CLIENTS)])

    assert statuses.count(201) == 20
    assert statuses.count(402) == 2 * CLIENTS - 20
    ledger = CreditEvent.objects.aggregate(total=Sum("credits"))["total"]
    assert ledger == Decimal("100")
    assert BillingPeriod.objects.get().credits_used == ledger
    assert DailyUsage.objects.aggregate(total=Sum("credits"))["total"] == ledger
    assert CreditEvent.objects.count() == 21


def test_concurrent_replays_of_one_key_charge_once(world, secret, event_payload):
    payload = event_payload(idempotency_key="same-operation", credits="5")

    statuses = post_concurrently(secret, [payload] * CLIENTS)

    assert statuses.count(201) == 1
    assert statuses.count(200) == CLIENTS - 1
    assert CreditEvent.objects.count() == 1
    assert BillingPeriod.objects.get().credits_used == Decimal("5")


def test_grants_added_while_fifty_clients_charge_never_overspend_the_cap(
    world, secret, event_payload
):
    """Grants land in the middle of the charges: whatever each event saw, the period never
    uses more than its allocation and the grants, no grant gives more than it has, and every
    counter equals the ledger. Once every grant is in, the rest of the cap fills exactly."""
    set_allocation(world.subscription, "100")
    assert post_concurrently(secret, [event_payload(credits="80")]) == [201]

    def add_grant(number):
        try:
            factories.grant(world.subscription, "4", reason=f"Top-up {number}")
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=5) as granting:
        added = [granting.submit(add_grant, number) for number in range(5)]
        statuses = post_concurrently(
            secret, [event_payload(credits="1") for _ in range(2 * CLIENTS)]
        )
        for future in added:
            future.result()
    assert set(statuses) <= {201, 402}
    assert_counters_equal_the_ledger(cap=Decimal("120"))

    statuses = post_concurrently(secret, [event_payload(credits="1") for _ in range(CLIENTS)])

    assert CreditEvent.objects.aggregate(total=Sum("credits"))["total"] == Decimal("120")
    assert_counters_equal_the_ledger(cap=Decimal("120"))
    assert CreditGrant.objects.filter(credits_used=4).count() == 5


def assert_counters_equal_the_ledger(*, cap: Decimal) -> None:
    ledger = CreditEvent.objects.aggregate(total=Sum("credits"), granted=Sum("grant_credits"))
    period = BillingPeriod.objects.get()
    grants = CreditGrant.objects.aggregate(used=Sum("credits_used"))["used"] or 0
    assert ledger["total"] <= cap
    assert period.credits_used == ledger["total"]
    assert period.grant_used == ledger["granted"] == grants
    assert ledger["total"] - ledger["granted"] <= Decimal("100")  # base
    assert not CreditGrant.objects.filter(credits_used__gt=F("credits")).exists()
    assert DailyUsage.objects.aggregate(total=Sum("credits"))["total"] == ledger["total"]
