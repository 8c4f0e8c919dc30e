"""Amounts of credits are read strictly wherever they come in: a JSON number, or a string of
ASCII digits with an optional "." and at most 4 decimals. Python's Decimal would read "1_5" as
15, and other digit systems, spaces and a "+" too: each is a 400 (or a form error), and nothing
is charged or changed."""

import json
from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import Subscription, User
from credits.models import CreditEvent, CreditLimit
from tests import factories

pytestmark = pytest.mark.django_db

LOOSE = [
    "1_5",
    "1_000.5",
    "4_500",
    "\u0661\u0662",  # Arabic-Indic digits
    "\u06f1\u06f2",  # Extended Arabic-Indic digits
    "\uff11\uff12",  # full-width digits
    "\u0967\u0968",  # Devanagari digits
    "1\u00a0",  # a no-break space
    "\u00a01",
    " 1",
    "1 ",
    "1\n",
    "+1",
    "-1",
    "1.",
    ".5",
    "1.23456",
    "1e3",
    "1E3",
    "0x10",
    "NaN",
    "Infinity",
    "",
    "1,5",
    "\u0661.\u0665",
]
# JSON text for the credits value, as a client would write it.
STRICT = {"1": "1", '"12"': "12", '"0.5"': "0.5", '"12.2500"': "12.25", "0.1234": "0.1234"}


@pytest.fixture
def admin_api(world):
    client = APIClient()
    client.force_authenticate(world.admin)
    return client


def event(world, credits_json: str) -> str:
    body = json.dumps(
        {
            "idempotency_key": "op-1",
            "environment": str(world.environment.public_id),
            "product": "ai-agent",
            "credits": "PLACEHOLDER",
        }
    )
    return body.replace('"PLACEHOLDER"', credits_json)


@pytest.mark.parametrize("text", LOOSE)
def test_loose_credits_are_refused_on_events(world, key_client, text):
    response = key_client.post(
        "/api/v1/events/", event(world, json.dumps(text)), content_type="application/json"
    )

    assert "credits" in factories.invalid_fields(response)
    assert not CreditEvent.objects.exists()


def test_loose_credits_are_refused_event_by_event_in_a_batch(world, key_client):
    events = [json.loads(event(world, json.dumps(text))) for text in ["1_5", "2"]]
    events[1]["idempotency_key"] = "op-2"

    response = key_client.post("/api/v1/events/batch/", {"events": events}, format="json")

    assert [result["status"] for result in response.json()["results"]] == [400, 201]
    assert list(CreditEvent.objects.values_list("credits", flat=True)) == [Decimal("2")]


@pytest.mark.parametrize(("credits_json", "charged"), STRICT.items())
def test_strict_credits_are_charged_exactly(world, key_client, credits_json, charged):
    response = key_client.post(
        "/api/v1/events/", event(world, credits_json), content_type="application/json"
    )

    assert response.status_code == 201, response.json()
    assert CreditEvent.objects.get().credits == Decimal(charged)


@pytest.mark.parametrize("value", [True, None, [1], {"credits": 1}, -1, "-0.5"])
def test_non_amounts_are_refused(world, key_client, value):
    response = key_client.post(
        "/api/v1/events/", event(world, json.dumps(value)), content_type="application/json"
    )

    assert "credits" in factories.invalid_fields(response)


@pytest.mark.parametrize("text", LOOSE)
def test_loose_limits_and_allowances_are_refused(world, admin_api, text):
    team = factories.TeamFactory(subscription=world.subscription)
    for url in (f"/api/v1/limits/users/{world.member.pk}/", f"/api/v1/limits/teams/{team.pk}/"):
        response = admin_api.put(url, {"credits": text}, format="json")
        assert "credits" in factories.invalid_fields(response), url
    assert not CreditLimit.objects.exists()

    before = world.subscription.excess_allowance
    response = admin_api.patch("/api/v1/subscription/", {"excess_allowance": text}, format="json")
    assert "excess_allowance" in factories.invalid_fields(response)
    world.subscription.refresh_from_db()
    assert world.subscription.excess_allowance == before


def test_strict_limits_and_allowances_are_kept(world, admin_api):
    response = admin_api.put(
        f"/api/v1/limits/users/{world.member.pk}/", {"credits": "4500"}, format="json"
    )
    assert response.status_code in (200, 201), response.json()
    assert CreditLimit.objects.get().credits == Decimal(4500)

    response = admin_api.patch(
        "/api/v1/subscription/",
        '{"limit_mode": "soft", "excess_allowance": 12.5}',
        content_type="application/json",
    )
    assert response.status_code == 200, response.json()
    world.subscription.refresh_from_db()
    assert world.subscription.excess_allowance == Decimal("12.5")


# --- The admin's forms ----------------------------------------------------------------------------


@pytest.fixture
def staff(client):
    client.force_login(User.objects.create_superuser("root@platform.example", "x"))
    return client


def subscription_form(subscription, **fields) -> dict:
    return {
        "name": subscription.name,
        "plan": subscription.plan,
        "timezone": subscription.timezone,
        "base_allocation": "10",
        "limit_mode": "hard",
        "excess_allowance": "0",
        **fields,
    }


@pytest.mark.parametrize("text", ["1_5", "\uff11\uff12", "+1", " 1", "1\u00a0", "-1"])
def test_the_admin_refuses_loose_amounts(world, staff, text):
    url = f"/admin/accounts/subscription/{world.subscription.pk}/change/"
    before = Subscription.objects.get(pk=world.subscription.pk).base_allocation

    response = staff.post(url, subscription_form(world.subscription, base_allocation=text))

    assert response.status_code == 200  # the form again, with the error
    assert "base_allocation" in response.context["adminform"].form.errors
    assert Subscription.objects.get(pk=world.subscription.pk).base_allocation == before


def test_the_admin_keeps_a_strict_amount(world, staff):
    url = f"/admin/accounts/subscription/{world.subscription.pk}/change/"

    response = staff.post(url, subscription_form(world.subscription, base_allocation="1500.25"))

    assert response.status_code == 302
    assert Subscription.objects.get(pk=world.subscription.pk).base_allocation == Decimal("1500.25")


ADJUST = reverse("admin:credits_creditevent_adjust")


def adjust(staff, subscription, text: str):
    return staff.post(ADJUST, {"subscription": subscription.pk, "credits": text, "reason": "r"})


@pytest.mark.parametrize("text", ["1_5", "+2"])
def test_adjustments_refuse_loose_amounts(world, staff, text):
    response = adjust(staff, world.subscription, text)

    assert response.status_code == 200
    assert "credits" in response.context["form"].errors
    assert not CreditEvent.objects.exists()


def test_adjustments_accept_a_minus_sign(world, staff):
    assert adjust(staff, world.subscription, "10").status_code == 302

    assert adjust(staff, world.subscription, "-2.5").status_code == 302
    assert sorted(CreditEvent.objects.values_list("credits", flat=True)) == [
        Decimal("-2.5"),
        Decimal("10"),
    ]
