"""Subscription admins give an API key a credit budget per period, over the API and in the
admin; every change is audited, bad amounts are refused, and nobody else reaches it."""

from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.audit import AuditEvent
from accounts.models import ApiKey
from tests import factories
from tests.admin_pages import admin_url
from tests.factories import token_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/api-keys/"


def key_url(api_key: ApiKey) -> str:
    return f"{URL}{api_key.prefix}/"


@pytest.fixture
def acme_key(world) -> ApiKey:
    return factories.api_key(world.subscription, name="Backend")[0]


def budget_of(api_key: ApiKey) -> Decimal | None:
    api_key.refresh_from_db()
    return api_key.credit_budget


def trail(api_key: ApiKey) -> list[tuple]:
    return list(
        AuditEvent.objects.filter(object_id=api_key.prefix)
        .exclude(action="api_key.created")
        .order_by("pk")
        .values_list("actor_label", "action", "changes")
    )


# --- Over the API ----------------------------------------------------------------------------


def test_an_admin_sets_changes_and_removes_a_keys_budget(world, acme_key):
    client = token_client(world.admin)

    set_ = client.patch(key_url(acme_key), {"credit_budget": "500"}, format="json")
    same = client.patch(key_url(acme_key), {"credit_budget": 500}, format="json")
    lowered = client.patch(key_url(acme_key), {"credit_budget": "120.25"}, format="json")

    assert set_.status_code == same.status_code == lowered.status_code == 200
    assert set_.json()["credit_budget"] == "500.0000"
    assert client.get(key_url(acme_key)).json()["credit_budget"] == "120.2500"
    assert client.get(URL).json()["results"][0]["credit_budget"] == "120.2500"

    removed = client.patch(key_url(acme_key), {"credit_budget": None}, format="json")

    assert removed.json()["credit_budget"] is None
    assert budget_of(acme_key) is None
    assert trail(acme_key) == [  # setting the same amount again is no change
        ("alice@acme.example", "api_key.budget_set", {"credit_budget": [None, "500.0000"]}),
        (
            "alice@acme.example",
            "api_key.budget_set",
            {"credit_budget": ["500.0000", "120.2500"]},
        ),
        ("alice@acme.example", "api_key.budget_removed", {"credit_budget": ["120.2500", None]}),
    ]


def test_a_key_can_be_created_with_a_budget(world):
    response = token_client(world.admin).post(
        URL, {"name": "Batch jobs", "credit_budget": "1000"}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["credit_budget"] == "1000.0000"
    created = AuditEvent.objects.get(action="api_key.created")
    assert created.changes["credit_budget"] == [None, "1000.0000"]


@pytest.mark.parametrize(
    "budget",
    ["-1", -1, "1.23456", 1.23456, "1_5", "NaN", "Infinity", "1e3", "", " ", "ten", True, []],
)
def test_bad_budgets_are_a_400_in_the_one_error_shape(world, acme_key, budget):
    client = token_client(world.admin)

    patched = client.patch(key_url(acme_key), {"credit_budget": budget}, format="json")
    created = client.post(URL, {"name": "x", "credit_budget": budget}, format="json")

    assert "credit_budget" in factories.invalid_fields(patched)
    assert "credit_budget" in factories.invalid_fields(created)
    assert budget_of(acme_key) is None
    assert ApiKey.objects.count() == 1


@pytest.mark.parametrize("body", ['{"credit_budget": NaN}', '{"credit_budget": Infinity}'])
def test_non_numbers_in_the_json_are_refused(world, acme_key, body):
    response = token_client(world.admin).generic(
        "PATCH", key_url(acme_key), body, content_type="application/json"
    )

    assert 400 <= response.status_code < 500
    assert set(response.json()) == {"error"}
    assert budget_of(acme_key) is None


def test_only_the_budget_is_writable(world, acme_key):
    client = token_client(world.admin)
    client.patch(key_url(acme_key), {"credit_budget": "5"}, format="json")

    renamed = client.patch(key_url(acme_key), {"name": "Renamed"}, format="json")
    unknown = client.patch(key_url(acme_key), {"budget": "5"}, format="json")
    missing = client.patch(key_url(acme_key), {}, format="json")

    assert factories.invalid_fields(renamed) == {
        "name": ["This field cannot be changed over the API."]
    }
    assert "budget" in factories.invalid_fields(unknown)
    assert missing.status_code == 200  # a PATCH without the budget changes nothing
    assert ApiKey.objects.get().name == "Backend"
    assert budget_of(acme_key) == Decimal(5)


def test_it_validates_ownership_another_subscriptions_key_is_not_found(world, acme_key):
    client = token_client(world.outsider)

    assert client.get(key_url(acme_key)).status_code == 404
    response = client.patch(key_url(acme_key), {"credit_budget": "1"}, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert budget_of(acme_key) is None
    assert client.get(f"{URL}nosuchkey/").status_code == 404


@pytest.mark.parametrize("persona", ["manager", "member"])
def test_a_project_manager_or_member_cannot_set_a_budget(world, acme_key, persona):
    client = token_client(getattr(world, persona))

    assert client.get(key_url(acme_key)).status_code == 403
    response = client.patch(key_url(acme_key), {"credit_budget": "1"}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert budget_of(acme_key) is None


def test_a_key_cannot_raise_its_own_budget(world):
    api_key, secret = factories.api_key(world.subscription)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")

    response = client.patch(key_url(api_key), {"credit_budget": "99999"}, format="json")

    assert response.status_code == 403
    assert budget_of(api_key) is None


# --- In the admin ----------------------------------------------------------------------------


def change_form(client, api_key: ApiKey, budget: str):
    data = {"name": api_key.name, "credit_budget": budget}
    return client.post(admin_url(api_key, "change"), data)


def test_an_admin_sets_a_budget_in_the_admin_and_it_is_audited(client, world, acme_key):
    client.force_login(world.admin)

    response = change_form(client, acme_key, "250.5")

    assert response.status_code == 302, response.content.decode()[-2000:]
    assert budget_of(acme_key) == Decimal("250.5")
    (event,) = AuditEvent.objects.filter(action="admin.changed")
    assert event.changes == {"credit_budget": [None, "250.5"]}
    assert event.subscription == world.subscription
    listing = client.get(reverse("admin:accounts_apikey_changelist")).content.decode()
    assert "250.5" in listing


def test_a_new_key_gets_its_budget_in_the_admin(client, world):
    client.force_login(world.admin)

    client.post(
        reverse("admin:accounts_apikey_add"),
        {"name": "Nightly", "subscription": world.subscription.pk, "credit_budget": "75"},
    )

    assert ApiKey.objects.get(name="Nightly").credit_budget == Decimal(75)


@pytest.mark.parametrize("budget", ["-1", "1.23456", "1_5", "NaN", "١٢"])
def test_the_admin_refuses_bad_budgets(client, world, acme_key, budget):
    client.force_login(world.admin)

    response = change_form(client, acme_key, budget)

    assert response.status_code == 200  # the form again, with its error
    assert response.context["adminform"].form.errors["credit_budget"]
    assert budget_of(acme_key) is None


def test_outsiders_and_lower_roles_cannot_set_a_budget_in_the_admin(client, world, acme_key):
    client.force_login(world.outsider)

    response = change_form(client, acme_key, "1")

    assert response.status_code == 302  # to the admin index: no such key for them
    assert budget_of(acme_key) is None
    for lower_role in (world.manager, world.member):
        client.force_login(lower_role)
        assert change_form(client, acme_key, "1").status_code == 302  # to the login
    assert budget_of(acme_key) is None
