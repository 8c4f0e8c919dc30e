"""Limits, budgets and idempotency hold under real concurrent PostgreSQL transactions."""

import fcntl
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connections
from django.db.models import F, Sum
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services import set_api_key_budget
from credits.limits import set_team_limit, set_user_limit
from credits.models import (
    ApiKeyPeriodUsage,
    BillingPeriod,
    CreditEvent,
    CreditGrant,
    DailyUsage,
    TeamPeriodUsage,
    UserPeriodUsage,
)
from tests import factories
from tests.credits.conftest import set_allocation

# serialized_rollback restores what migrations created (the admins group) after a flush.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(autouse=True)
def one_crowd_at_a_time(tmp_path_factory):
    """Each test opens 50 connections: the suite's processes take turns (a lock file in the
    run's temporary directory, which they share), so that two crowds never meet PostgreSQL's
    default max_connections of 100."""
    lock_path = tmp_path_factory.getbasetemp().parent / "fifty-clients.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


CLIENTS = 50


def post_concurrently(secret, payloads, *, answer=lambda response: response.status_code):
    def post(payload):
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
            return answer(client.post("/api/v1/events/", payload, format="json"))
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


def status_and_code(response) -> tuple[int, str | None]:
    return response.status_code, response.json().get("error", {}).get("code")


@pytest.mark.parametrize(
    ("binding", "code"),
    [
        ("team", "team_limit_exceeded"),
        ("user", "user_limit_exceeded"),
        ("api_key", "api_key_budget_exceeded"),
    ],
)
def test_fifty_clients_near_a_team_user_or_key_cap_never_overspend(
    world, secret, event_payload, binding, code
):
    """All three owners are capped, so every event takes their counters in the fixed order
    (periods, teams, users, API keys) at once; the binding cap is 20 and the others 30."""
    team = factories.TeamFactory(subscription=world.subscription, name="Writers")
    factories.team_membership(world.member, team)
    caps = {owner: Decimal(30) for owner in ("team", "user", "api_key")} | {binding: Decimal(20)}
    set_team_limit(subscription=world.subscription, team=team, credits=caps["team"])
    set_user_limit(subscription=world.subscription, user=world.member, credits=caps["user"])
    set_api_key_budget(api_key=ApiKey.objects.get(), credit_budget=caps["api_key"])

    payloads = [event_payload(credits="1") for _ in range(2 * CLIENTS)]
    answers = post_concurrently(secret, payloads, answer=status_and_code)

    assert answers.count((201, None)) == 20
    assert answers.count((402, code)) == 2 * CLIENTS - 20
    ledger = CreditEvent.objects.aggregate(total=Sum("credits"))["total"]
    assert ledger == Decimal(20)
    for counter in (BillingPeriod, TeamPeriodUsage, UserPeriodUsage, ApiKeyPeriodUsage):
        assert counter.objects.get().credits_used == ledger


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
