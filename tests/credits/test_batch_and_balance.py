"""POST /api/v1/events/batch/ and GET /api/v1/balance/."""

import json
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.models import ApiKey
from credits.models import CreditEvent, CreditLimit
from credits.selectors import balance
from tests import factories
from tests.credits.conftest import set_allocation
from tests.factories import frozen_at, utc

# On the real clock: also run at each pinned moment (tests/conftest.py).
pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]

BATCH = "/api/v1/events/batch/"
BALANCE = "/api/v1/balance/"


frozen_now = frozen_at(utc(2026, 11, 23, 10))


def test_each_event_of_a_batch_is_accepted_or_refused_on_its_own(world, key_client, event_payload):
    set_allocation(world.subscription, "10")
    events = [
        event_payload(idempotency_key="a", credits="4"),
        event_payload(idempotency_key="b", credits="-1"),
        event_payload(idempotency_key="c", credits="7"),
        event_payload(idempotency_key="a", credits="4"),
        "not an object",
        None,  # was: the whole batch refused, although the schema takes any item
        event_payload(idempotency_key="d", credits="6"),
    ]

    response = key_client.post(BATCH, {"events": events}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert [r["status"] for r in body["results"]] == [201, 400, 402, 200, 400, 400, 201]
    assert [r["index"] for r in body["results"]] == list(range(7))
    assert body["results"][2]["error"]["code"] == "credit_limit_exceeded"
    assert "credits" in body["results"][1]["error"]["details"]
    assert (body["accepted"], body["refused"]) == (3, 4)
    assert body["balance"]["used"] == "10.0000"
    assert CreditEvent.objects.count() == 2


def test_a_batch_takes_credits_as_a_json_number_with_a_fraction(key_client, event_payload):
    """Was: the whole batch refused ("Value must be valid JSON"), found by the deep
    schemathesis run: the parser reads fractions as Decimal, which the item check could not
    write back as JSON."""
    body = json.dumps({"events": [event_payload(credits="CREDITS")]}).replace('"CREDITS"', "1.5")

    response = key_client.post(BATCH, body, content_type="application/json")

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["status"] == 201
    assert Decimal(result["event"]["credits"]) == Decimal("1.5")


@pytest.mark.parametrize(
    "body",
    [{"events": []}, {"events": "nope"}, {}, {"events": [{}] * 1001}],
)
def test_a_malformed_batch_is_refused_whole(key_client, body):
    response = key_client.post(BATCH, body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_balance_for_an_api_key(world, key_client, event_payload):
    set_allocation(world.subscription, "200", mode="soft", allowance="50")
    key_client.post("/api/v1/events/", event_payload(credits="210"), format="json")

    body = key_client.get(BALANCE, {"environment": str(world.environment.public_id)}).json()

    assert body == body | {
        "subscription": {"id": world.subscription.pk, "name": "Acme"},
        "period_start": "2026-10-31T23:00:00Z",
        "period_end": "2026-11-30T23:00:00Z",
        "next_reset": "2026-11-30T23:00:00Z",
        "days_until_reset": 8,
        "limit_mode": "soft",
        "base_allocation": "200.0000",
        "used": "210.0000",
        "remaining": "0.0000",
        "excess_allowance": "50.0000",
        "excess_used": "10.0000",
        "excess_remaining": "40.0000",
        "utilisation_percent": "105.00",
        "environment_used": "210.0000",
    }


def test_balance_shows_a_users_limit_to_the_key(world, key_client, event_payload):
    CreditLimit.objects.create(subscription=world.subscription, user=world.member, credits=20)
    key_client.post("/api/v1/events/", event_payload(credits="5"), format="json")

    body = key_client.get(BALANCE, {"user": world.member.email}).json()

    assert body["user"] == {"limit": "20.0000", "used": "5.0000", "remaining": "15.0000"}
    assert body["team"] is None


def test_members_see_their_own_limit(world, key_client, event_payload):
    team = factories.TeamFactory(subscription=world.subscription)
    factories.team_membership(world.member, team)
    CreditLimit.objects.create(subscription=world.subscription, team=team, credits=100)
    key_client.post("/api/v1/events/", event_payload(credits="5"), format="json")
    client = APIClient()
    client.force_authenticate(world.member)

    body = client.get(BALANCE).json()

    assert body["used"] == "5.0000"
    assert body["user"] == {"limit": None, "used": "5.0000", "remaining": None}
    assert body["team"] == {"limit": "100.0000", "used": "5.0000", "remaining": "95.0000"}


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"environment": "not-a-uuid"}, 400, "validation_error"),
        ({"environment": "7d1b0a5e-0000-4000-8000-000000000000"}, 404, "unknown_environment"),
        ({"user": "charlie@globex.example"}, 404, "not_found"),
    ],
)
def test_balance_refuses_unknown_and_foreign_ids(world, key_client, params, status, code):
    response = key_client.get(BALANCE, params)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_balance_never_shows_another_subscription(world, key_client):
    client = APIClient()
    client.force_authenticate(world.outsider)

    assert client.get(BALANCE, {"subscription": world.subscription.pk}).status_code == 404
    foreign = client.get(BALANCE, {"environment": str(world.environment.public_id)})
    assert foreign.status_code == 404
    assert client.get(BALANCE).json()["subscription"]["id"] == world.other_subscription.pk


def test_a_member_cannot_read_a_colleagues_limit(world):
    client = APIClient()
    client.force_authenticate(world.member)

    response = client.get(BALANCE, {"user": world.manager.email})

    assert response.status_code == 404


def test_anonymous_callers_get_a_401(db):
    response = APIClient().get(BALANCE)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_period_nobody_charged_reads_as_zero(world, key_client):
    body = key_client.get(BALANCE).json()

    assert (body["used"], body["remaining"]) == ("0.0000", "1000.0000")
    assert Decimal(body["utilisation_percent"]) == 0


def test_a_batch_over_a_user_limit_accepts_exactly_the_events_that_fit_in_order(
    world, key_client, event_payload
):
    """The batch does not fit as a whole, so it is charged event by event: the admin's
    events are not held back by the member's limit, and a key reused with another payload
    inside the batch is a conflict."""
    CreditLimit.objects.create(subscription=world.subscription, user=world.member, credits=5)
    admin = world.admin.email
    events = [
        event_payload(idempotency_key="m1", credits="3"),
        event_payload(idempotency_key="a1", credits="10", user=admin),
        event_payload(idempotency_key="m2", credits="3"),
        event_payload(idempotency_key="m3", credits="2"),
        event_payload(idempotency_key="m1", credits="4"),
        event_payload(idempotency_key="a2", credits="10", user=admin),
    ]

    body = key_client.post(BATCH, {"events": events}, format="json").json()

    assert [r["status"] for r in body["results"]] == [201, 201, 402, 201, 409, 201]
    assert body["results"][2]["error"]["code"] == "user_limit_exceeded"
    assert body["results"][4]["error"]["code"] == "idempotency_conflict"
    assert body["balance"]["used"] == "25.0000"
    assert sorted(CreditEvent.objects.values_list("idempotency_key", flat=True)) == [
        "a1",
        "a2",
        "m1",
        "m3",
    ]
    member_balance = key_client.get(BALANCE, {"user": world.member.email}).json()
    assert member_balance["user"] == {"limit": "5.0000", "used": "5.0000", "remaining": "0.0000"}
    resent = key_client.post(BATCH, {"events": events[2:3]}, format="json").json()
    assert resent["results"][0]["error"]["code"] == "user_limit_exceeded"  # nothing was kept


@pytest.mark.parametrize("size", [10, 200])
def test_a_batch_that_fits_costs_the_same_queries_whatever_its_size(
    world, key_client, event_payload, django_assert_max_num_queries, size
):
    members = [world.member]
    for n in range(3):
        member = factories.UserFactory(email=f"member{n}@acme.example")
        factories.membership(member, "member", environment=world.environment)
        members.append(member)
    events = [
        event_payload(user=members[n % 4].email, agent=f"agent {n % 3}", credits="0.5")
        for n in range(size)
    ]

    with django_assert_max_num_queries(17):
        response = key_client.post(BATCH, {"events": events}, format="json")

    assert response.json()["accepted"] == size
    assert Decimal(response.json()["balance"]["used"]) == Decimal("0.5") * size


def test_each_refusal_keeps_its_own_reason_when_only_one_event_reaches_the_charge(
    world, key_client, event_payload
):
    set_allocation(world.subscription, "1")
    events = [
        event_payload(idempotency_key="a", agent="999999"),
        event_payload(idempotency_key="b", credits="2"),
    ]

    body = key_client.post(BATCH, {"events": events}, format="json").json()

    assert [r["status"] for r in body["results"]] == [422, 402]
    assert body["results"][0]["error"]["code"] == "unknown_agent"
    assert body["results"][1]["error"]["code"] == "credit_limit_exceeded"
    assert CreditEvent.objects.count() == 0


def test_a_balance_is_read_in_one_statement(
    world, key_client, event_payload, django_assert_num_queries
):
    team = factories.TeamFactory(subscription=world.subscription)
    factories.team_membership(world.member, team)
    CreditLimit.objects.create(subscription=world.subscription, user=world.member, credits=20)
    CreditLimit.objects.create(subscription=world.subscription, team=team, credits=100)
    factories.grant(world.subscription, "50", expires_at=utc(2026, 11, 27))
    api_key, _ = factories.api_key(world.subscription, name="Budgeted")
    ApiKey.objects.filter(pk=api_key.pk).update(credit_budget=Decimal("30"))
    api_key.refresh_from_db()
    key_client.post("/api/v1/events/", event_payload(credits="5"), format="json")

    with django_assert_num_queries(1):
        read = balance(subscription=world.subscription, user=world.member, api_key=api_key)

    assert (read.used, read.grants.remaining, read.grants.expiring_soon) == (
        Decimal("5"),
        Decimal("50"),
        Decimal("50"),
    )
    assert (read.user.limit, read.user.used) == (Decimal("20"), Decimal("5"))
    assert (read.team.limit, read.team.used) == (Decimal("100"), Decimal("5"))
    assert (read.api_key.limit, read.api_key.used, read.api_key.id) == (
        Decimal("30"),
        Decimal("0"),  # the event was charged to the other key
        api_key.prefix,
    )
