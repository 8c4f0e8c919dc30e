"""Credits as money: the draw-down order (base, grants by earliest expiry, excess), each
event's cost at the price in effect, grants over the API and in the admin, their lapse, and the
balance by credit type."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from rest_framework.test import APIClient

from accounts.audit import AuditEvent
from accounts.models import Subscription
from credits.errors import InvalidPrice
from credits.grants import set_subscription_price
from credits.models import CreditEvent, CreditGrant, GrantAdjustment, PlanPrice, SubscriptionPrice
from credits.tasks import lapse_expired_grants
from tests import factories
from tests.credits.conftest import set_allocation
from tests.factories import utc

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 15, 12)
URL = "/api/v1/events/"


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def charge(key_client, event_payload, credits: str, **fields):
    response = key_client.post(URL, event_payload(credits=credits, **fields), format="json")
    return response


def split(response) -> tuple[str, str, str, str]:
    event = response.json()["event"]
    return event["credits"], event["grant_credits"], event["excess_credits"], event["cost"]


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# --- Draw-down order and cost ----------------------------------------------------------------


def test_credits_are_drawn_from_base_then_grants_by_expiry_then_excess(
    world, key_client, event_payload
):
    set_allocation(world.subscription, "10", mode="soft", allowance="5")
    factories.plan_price(
        "pro", credit_price="0.02", excess_price="0.05", effective_from=NOW - timedelta(days=30)
    )
    later = factories.grant(world.subscription, "4", effective_at=NOW - timedelta(days=1))
    sooner = factories.grant(
        world.subscription,
        "3",
        effective_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(days=3),
    )

    assert split(charge(key_client, event_payload, "8")) == (
        "8.0000",
        "0.0000",
        "0.0000",
        "0.1600000000",
    )
    assert split(charge(key_client, event_payload, "4")) == (
        "4.0000",
        "2.0000",
        "0.0000",
        "0.0400000000",
    )
    assert split(charge(key_client, event_payload, "6")) == (
        "6.0000",
        "5.0000",
        "1.0000",
        "0.0500000000",
    )

    sooner.refresh_from_db()
    later.refresh_from_db()
    assert (sooner.credits_used, later.credits_used) == (Decimal(3), Decimal(4))
    refused = charge(key_client, event_payload, "5")
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "credit_limit_exceeded"
    assert split(charge(key_client, event_payload, "4")) == (
        "4.0000",
        "0.0000",
        "4.0000",
        "0.2000000000",
    )
    assert CreditEvent.objects.count() == 4


def test_hard_limits_count_only_grants_active_at_the_events_time(world, key_client, event_payload):
    set_allocation(world.subscription, "10")
    factories.grant(world.subscription, "5", effective_at=NOW + timedelta(seconds=1))
    expired = factories.grant(
        world.subscription,
        "5",
        effective_at=NOW - timedelta(days=3),
        expires_at=NOW - timedelta(days=1),
    )
    factories.grant(world.subscription, "2", effective_at=NOW - timedelta(days=1))

    assert split(charge(key_client, event_payload, "12"))[:3] == ("12.0000", "2.0000", "0.0000")
    assert charge(key_client, event_payload, "0.0001").status_code == 402
    # Dated before the expiry (within the grace window): the expired grant still counts.
    early = charge(key_client, event_payload, "1", timestamp=(NOW - timedelta(days=2)).isoformat())
    assert split(early)[:3] == ("1.0000", "1.0000", "0.0000")
    expired.refresh_from_db()
    assert expired.credits_used == Decimal(1)


def test_cost_uses_the_price_in_effect_at_each_events_time(world, key_client, event_payload):
    set_allocation(world.subscription, "100")
    factories.plan_price(
        "pro", credit_price="0.01", excess_price="0.03", effective_from=NOW - timedelta(days=30)
    )
    factories.subscription_price(
        world.subscription,
        credit_price="0.015",
        excess_price="0.03",
        effective_from=NOW - timedelta(hours=1),
    )

    before = charge(
        key_client, event_payload, "2", timestamp=(NOW - timedelta(hours=2)).isoformat()
    )
    after = charge(key_client, event_payload, "2")

    assert split(before)[3] == "0.0200000000"
    assert split(after)[3] == "0.0300000000"


def test_no_price_means_no_cost(world, key_client, event_payload):
    assert charge(key_client, event_payload, "3").status_code == 201
    assert CreditEvent.objects.get().cost == 0


# --- Grants over the API ---------------------------------------------------------------------


def grant_body(**fields):
    return {
        "kind": "top_up",
        "credits": "500",
        "price": "49.90",
        "currency": "EUR",
        "reason": "Top-up",
        **fields,
    }


def test_an_admin_adds_and_lists_grants_and_the_trail_records_them(world):
    client = api(world.admin)

    created = client.post(
        "/api/v1/grants/", grant_body(expires_at="2027-01-01T00:00:00Z"), format="json"
    )

    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["credits"], body["price"], body["remaining"]) == (
        "500.0000",
        "49.900000",
        "500.0000",
    )
    assert body["created_by"] == "alice@acme.example"
    listed = client.get("/api/v1/grants/").json()
    assert [grant["id"] for grant in listed["results"]] == [body["id"]]
    event = AuditEvent.objects.get(action="grant.added")
    assert event.subscription == world.subscription
    assert event.changes["credits"] == [None, "500.0000"]


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"credits": "-5"}, 400, "validation_error"),
        ({"credits": "0"}, 400, "invalid_grant"),
        ({"price": "49.901"}, 400, "invalid_grant"),  # finer than the cent
        ({"price": "1.1234567"}, 400, "validation_error"),
        ({"price": "-1"}, 400, "validation_error"),
        ({"currency": "XYZ"}, 400, "invalid_grant"),
        ({"kind": "bonus"}, 400, "invalid_grant"),  # a bonus with a price
        ({"effective_at": "2026-09-30T12:00:00Z"}, 422, "period_closed"),
        ({"expires_at": "2026-11-01T00:00:00Z"}, 400, "invalid_grant"),
        ({"subscription": 1}, 400, "validation_error"),
        ({"reason": ""}, 400, "validation_error"),
    ],
)
def test_bad_grants_are_refused_in_the_one_error_shape_and_nothing_is_stored(
    world, fields, status, code
):
    response = api(world.admin).post("/api/v1/grants/", grant_body(**fields), format="json")

    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code
    assert not CreditGrant.objects.exists()
    assert not AuditEvent.objects.filter(action="grant.added").exists()


def test_a_grant_in_another_currency_than_the_subscriptions_prices_is_refused(world):
    factories.plan_price(
        "pro", credit_price="0.01", excess_price="0.02", effective_from=NOW - timedelta(days=1)
    )

    response = api(world.admin).post("/api/v1/grants/", grant_body(currency="USD"), format="json")

    assert response.status_code == 400
    assert not CreditGrant.objects.exists()


def test_grants_of_another_subscription_are_out_of_reach(world):
    factories.grant(world.other_subscription, "5")
    client = api(world.admin)
    other = world.other_subscription.pk

    assert client.get("/api/v1/grants/").json()["results"] == []
    assert client.get(f"/api/v1/grants/?subscription={other}").status_code == 404
    response = client.post(f"/api/v1/grants/?subscription={other}", grant_body(), format="json")
    assert response.status_code == 404
    assert CreditGrant.objects.filter(subscription=world.subscription).count() == 0
    assert api(world.outsider).get("/api/v1/grants/").json()["count"] == 1


@pytest.mark.parametrize("persona", ["manager", "member"])
def test_lower_roles_and_api_keys_get_no_grants(world, persona):
    factories.grant(world.subscription, "5")
    client = api(getattr(world, persona))

    assert client.get("/api/v1/grants/").status_code == 403
    assert client.post("/api/v1/grants/", grant_body(), format="json").status_code == 403
    _, secret = factories.api_key(world.subscription)
    key = APIClient()
    key.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    assert key.get("/api/v1/grants/").status_code == 403
    assert CreditGrant.objects.count() == 1


# --- Balance by credit type ------------------------------------------------------------------


def test_the_balance_shows_base_grants_and_excess(world, key_client, event_payload):
    set_allocation(world.subscription, "10", mode="soft", allowance="5")
    factories.grant(
        world.subscription,
        "4",
        effective_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(days=5),
    )
    factories.grant(world.subscription, "6", effective_at=NOW - timedelta(days=1))
    charge(key_client, event_payload, "13")

    types = key_client.get("/api/v1/balance/").json()["credit_types"]

    assert types == {
        "base": {"used": "10.0000", "remaining": "0.0000"},
        "grants": {"used": "3.0000", "remaining": "7.0000", "expiring_soon": "1.0000"},
        "excess": {"used": "0.0000", "allowance": "5.0000"},
    }


# --- Lapse -----------------------------------------------------------------------------------


def test_an_expired_grants_remainder_lapses_once_after_the_grace_window(
    world, key_client, event_payload, settings
):
    set_allocation(world.subscription, "0")
    expiring = factories.grant(
        world.subscription,
        "10",
        effective_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(hours=1),
    )
    charge(key_client, event_payload, "4")

    assert lapse_expired_grants() == 0
    after_grace = NOW + timedelta(hours=1 + settings.LATE_EVENT_GRACE_HOURS, seconds=1)
    with time_machine.travel(after_grace, tick=False):
        assert lapse_expired_grants() == 1
        assert lapse_expired_grants() == 0

    expiring.refresh_from_db()
    assert (expiring.credits_used, expiring.credits_lapsed, expiring.remaining) == (4, 6, 0)
    lapse = GrantAdjustment.objects.get()
    assert (lapse.kind, lapse.credits, lapse.at) == ("lapse", Decimal(-6), expiring.expires_at)


# --- Prices and grants in the admin ----------------------------------------------------------


def test_only_platform_staff_set_prices_and_subscription_admins_read_them(world, client):
    staff = factories.UserFactory(
        email="staff@creditdesk.example", is_staff=True, is_superuser=True
    )
    price = {
        "plan": "pro",
        "currency": "EUR",
        "credit_price": "0.012",
        "excess_price": "0.03",
        "effective_from_0": "2026-12-01",
        "effective_from_1": "00:00:00",
    }
    client.force_login(staff)
    assert client.post("/admin/credits/planprice/add/", price).status_code == 302
    backdated = {**price, "effective_from_0": "2026-11-01"}
    assert client.post("/admin/credits/planprice/add/", backdated).status_code == 200
    assert PlanPrice.objects.count() == 1
    assert AuditEvent.objects.filter(action="price.set").count() == 1

    client.force_login(world.admin)
    row = PlanPrice.objects.get()
    assert client.get("/admin/credits/planprice/").status_code == 200
    assert client.get(f"/admin/credits/planprice/{row.pk}/change/").status_code == 200
    assert client.post("/admin/credits/planprice/add/", price).status_code == 403
    override = {"subscription": world.subscription.pk, **price}
    assert client.post("/admin/credits/subscriptionprice/add/", override).status_code == 403
    assert (
        client.post(f"/admin/credits/planprice/{row.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert not SubscriptionPrice.objects.exists()
    assert PlanPrice.objects.count() == 1


def test_subscription_admins_add_grants_in_the_admin_and_never_change_them(world, client):
    client.force_login(world.admin)
    body = {
        "subscription": world.subscription.pk,
        "kind": "bonus",
        "credits": "25",
        "price": "0",
        "currency": "",
        "effective_at_0": "2026-11-15",
        "effective_at_1": "12:00:00",
        "reason": "Launch bonus",
        "adjustments-TOTAL_FORMS": "0",
        "adjustments-INITIAL_FORMS": "0",
    }
    assert client.post("/admin/credits/creditgrant/add/", body).status_code == 302
    grant = CreditGrant.objects.get()
    assert grant.created_by == world.admin
    foreign = {**body, "subscription": world.other_subscription.pk}
    assert client.post("/admin/credits/creditgrant/add/", foreign).status_code == 200
    assert CreditGrant.objects.count() == 1
    change = client.post(
        f"/admin/credits/creditgrant/{grant.pk}/change/", {**body, "credits": "99"}
    )
    assert change.status_code == 403
    delete = client.post(f"/admin/credits/creditgrant/{grant.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 403

    adjusted = client.post(
        "/admin/credits/grantadjustment/add/",
        {"grant": grant.pk, "credits": "-5", "reason": "Typo"},
    )
    assert adjusted.status_code == 302
    grant.refresh_from_db()
    assert (grant.credits, grant.credits_adjusted, grant.remaining) == (25, -5, 20)
    assert list(AuditEvent.objects.values_list("action", flat=True).order_by("pk")) == [
        "grant.added",
        "grant.adjusted",
    ]

    other = factories.grant(world.other_subscription, "5")
    assert client.get(f"/admin/credits/creditgrant/{other.pk}/change/").status_code == 302
    client.force_login(world.member)
    assert client.get("/admin/credits/creditgrant/").status_code in (302, 403)


def test_a_subscriptions_prices_keep_one_currency(world):
    staff = factories.UserFactory(is_staff=True, is_superuser=True)
    factories.plan_price("pro", credit_price="0.01", excess_price="0.02", effective_from=NOW)
    with pytest.raises(InvalidPrice):
        set_subscription_price(
            subscription=world.subscription,
            currency="USD",
            credit_price=Decimal("0.01"),
            excess_price=Decimal("0.02"),
            effective_from=NOW + timedelta(days=1),
            created_by=staff,
        )
    assert Subscription.objects.get(pk=world.subscription.pk).prices.count() == 0
