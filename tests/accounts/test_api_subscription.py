"""Subscription admins read their subscription and change how its allocation is enforced."""

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.models import Subscription
from tests import factories
from tests.factories import token_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/subscription/"


def test_admin_reads_the_subscription_with_decimals_as_strings(world):
    response = token_client(world.admin).get(URL)

    assert response.status_code == 200
    assert response.json() == {
        "id": world.subscription.pk,
        "name": "Acme",
        "plan": "pro",
        "timezone": "Europe/Prague",
        "base_allocation": "1000.0000",
        "limit_mode": "hard",
        "excess_allowance": "0.0000",
    }


def test_admin_switches_to_soft_mode_with_an_allowance(world):
    response = token_client(world.admin).patch(
        URL, {"limit_mode": "soft", "excess_allowance": "250.5"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["limit_mode"] == "soft"
    assert response.json()["excess_allowance"] == "250.5000"
    world.subscription.refresh_from_db()
    assert world.subscription.limit_mode == Subscription.LimitMode.SOFT
    assert world.subscription.excess_allowance == Decimal("250.5")


def test_a_patch_changes_only_what_it_names(world):
    world.subscription.excess_allowance = Decimal("100")
    world.subscription.save()

    response = token_client(world.admin).patch(URL, {"limit_mode": "soft"}, format="json")

    assert response.json()["excess_allowance"] == "100.0000"
    assert token_client(world.admin).patch(URL, {}, format="json").status_code == 200


def test_json_numbers_are_read_exactly(world):
    response = token_client(world.admin).patch(URL, {"excess_allowance": 0.1}, format="json")

    assert response.status_code == 200
    world.subscription.refresh_from_db()
    assert world.subscription.excess_allowance == Decimal("0.1")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"excess_allowance": "-1"}, "excess_allowance"),
        ({"excess_allowance": "1.00001"}, "excess_allowance"),
        ({"excess_allowance": "lots"}, "excess_allowance"),
        ({"excess_allowance": "NaN"}, "excess_allowance"),
        ({"excess_allowance": "1" * 16}, "excess_allowance"),
        ({"excess_allowance": None}, "excess_allowance"),
        ({"limit_mode": "elastic"}, "limit_mode"),
        ({"base_allocation": "99999"}, "base_allocation"),
        ({"plan": "scale"}, "plan"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_or_read_only_fields_are_refused(world, body, field):
    response = token_client(world.admin).patch(URL, body, format="json")

    assert field in factories.invalid_fields(response)
    world.subscription.refresh_from_db()
    assert (world.subscription.limit_mode, world.subscription.base_allocation) == (
        "hard",
        Decimal("1000"),
    )


def test_a_body_that_is_not_an_object_is_a_400(world):
    response = token_client(world.admin).patch(URL, ["soft"], format="json")

    assert response.status_code == 400


def test_it_validates_ownership(world):
    outsider = token_client(world.outsider)

    assert outsider.get(URL).json()["name"] == "Globex"
    assert outsider.get(URL, {"subscription": world.subscription.pk}).status_code == 404
    response = outsider.patch(
        f"{URL}?subscription={world.subscription.pk}", {"limit_mode": "soft"}, format="json"
    )
    assert response.status_code == 404
    world.subscription.refresh_from_db()
    assert world.subscription.limit_mode == "hard"


@pytest.mark.parametrize("persona", ["manager", "member"])
def test_lower_roles_are_forbidden(world, persona):
    client = token_client(getattr(world, persona))

    assert client.get(URL).status_code == 403
    assert client.patch(URL, {"limit_mode": "soft"}, format="json").status_code == 403
    world.subscription.refresh_from_db()
    assert world.subscription.limit_mode == "hard"


def test_an_api_key_cannot_change_settings(world):
    _, secret = factories.api_key(world.subscription)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")

    assert client.get(URL).status_code == 403
    assert client.patch(URL, {"limit_mode": "soft"}, format="json").status_code == 403


def test_the_subscription_parameter_picks_a_sub_account(world):
    sub_account = factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)

    response = token_client(world.admin).patch(
        f"{URL}?subscription={sub_account.pk}", {"limit_mode": "soft"}, format="json"
    )

    assert response.json()["name"] == "Acme Labs"
    sub_account.refresh_from_db()
    world.subscription.refresh_from_db()
    assert (sub_account.limit_mode, world.subscription.limit_mode) == ("soft", "hard")
