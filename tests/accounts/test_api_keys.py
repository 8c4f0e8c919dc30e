"""Subscription admins manage API keys over the API; nobody else can, not even a key."""

import uuid

import pytest
from rest_framework.test import APIClient

from accounts.models import ApiKey, Role
from tests import factories
from tests.factories import api_key_client, token_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/api-keys/"


def revoke_url(api_key: ApiKey) -> str:
    return f"{URL}{api_key.prefix}/revoke/"


@pytest.fixture
def acme_key(world):
    return factories.api_key(world.subscription, name="Backend", environment=world.environment)


@pytest.fixture
def globex_key(world):
    return factories.api_key(world.other_subscription, name="Globex backend")


# --- Listing ---------------------------------------------------------------------------------


def test_admin_lists_the_subscriptions_keys_without_secrets(world, acme_key, globex_key):
    api_key, _ = acme_key

    response = token_client(world.admin).get(URL)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert body["results"] == [
        {
            "id": api_key.prefix,
            "name": "Backend",
            "prefix": api_key.prefix,
            "environment": str(world.environment.public_id),
            "created": api_key.created.isoformat().replace("+00:00", "Z"),
            "last_used_at": None,
            "revoked": False,
            "revoked_at": None,
            "credit_budget": None,
        }
    ]


def test_it_validates_ownership_the_outsider_sees_only_their_own_keys(world, acme_key, globex_key):
    response = token_client(world.outsider).get(URL)

    assert [key["name"] for key in response.json()["results"]] == ["Globex backend"]
    foreign = token_client(world.outsider).get(URL, {"subscription": world.subscription.pk})
    assert foreign.status_code == 404
    assert foreign.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("persona", ["manager", "member"])
def test_lower_roles_are_forbidden(world, acme_key, persona):
    client = token_client(getattr(world, persona))

    assert client.get(URL).status_code == 403
    assert client.post(URL, {"name": "Mine"}).status_code == 403
    response = client.post(revoke_url(acme_key[0]))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not ApiKey.objects.get(pk=acme_key[0].pk).revoked


def test_an_api_key_cannot_manage_keys(world, acme_key):
    _, secret = acme_key
    client = api_key_client(secret)

    assert client.get(URL).status_code == 403
    assert client.post(URL, {"name": "Escalation"}).status_code == 403
    assert client.post(revoke_url(acme_key[0])).status_code == 403
    assert ApiKey.objects.count() == 1


def test_anonymous_requests_are_refused(world):
    assert APIClient().get(URL).status_code == 401


def test_an_admin_of_several_subscriptions_picks_one(world, acme_key, globex_key):
    factories.membership(
        world.admin, Role.SUBSCRIPTION_ADMIN, subscription=world.other_subscription
    )
    client = token_client(world.admin)

    default = client.get(URL)
    chosen = client.get(URL, {"subscription": world.other_subscription.pk})

    assert [key["name"] for key in default.json()["results"]] == ["Backend"]  # the oldest
    assert [key["name"] for key in chosen.json()["results"]] == ["Globex backend"]
    assert client.get(URL, {"subscription": "acme"}).status_code == 400
    assert client.get(URL, {"subscription": "9" * 30}).status_code == 404


def test_a_parent_admin_manages_a_sub_accounts_keys(world):
    sub_account = factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)
    factories.api_key(sub_account, name="Labs backend")
    client = token_client(world.admin)

    assert client.get(URL).json()["count"] == 0  # the parent comes first
    listed = client.get(URL, {"subscription": sub_account.pk}).json()["results"]
    assert [key["name"] for key in listed] == ["Labs backend"]


# --- Creating --------------------------------------------------------------------------------


def test_creating_a_key_returns_its_secret_once(world):
    client = token_client(world.admin)

    response = client.post(
        URL, {"name": "Billing worker", "environment": str(world.environment.public_id)}
    )

    assert response.status_code == 201
    body = response.json()
    assert response["Cache-Control"] == "no-store"
    api_key = ApiKey.objects.get(prefix=body["id"])
    assert body["key"].startswith(f"{api_key.prefix}.")
    assert api_key.subscription == world.subscription
    assert api_key.environment == world.environment
    assert api_key.created_by == world.admin
    assert api_key.is_valid(body["key"])
    assert "key" not in client.get(URL).json()["results"][0]


def test_a_new_key_without_environment_covers_every_environment(world):
    response = token_client(world.admin).post(URL, {"name": "Everywhere"}, format="json")

    assert response.status_code == 201
    assert response.json()["environment"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 51}, "name"),
        ({"name": "Bad", "environment": "not-a-uuid"}, "environment"),
        ({"name": "Unknown", "environment": str(uuid.uuid4())}, "environment"),
    ],
)
def test_invalid_keys_are_refused_field_by_field(world, body, field):
    response = token_client(world.admin).post(URL, body, format="json")

    assert field in factories.invalid_fields(response)
    assert not ApiKey.objects.exists()


def test_a_key_cannot_be_restricted_to_another_tenants_environment(world):
    response = token_client(world.admin).post(
        URL, {"name": "Sneaky", "environment": str(world.foreign_environment.public_id)}
    )

    assert response.status_code == 400
    assert "environment" in response.json()["error"]["details"]
    assert not ApiKey.objects.exists()


# --- Revoking --------------------------------------------------------------------------------


def test_a_revoked_key_is_refused_at_once(world, acme_key):
    api_key, secret = acme_key
    machine = api_key_client(secret)
    assert machine.get(URL).status_code == 403  # authenticated, merely not allowed to manage

    response = token_client(world.admin).post(revoke_url(api_key))

    assert response.status_code == 200
    assert response.json()["revoked"] is True
    assert response.json()["revoked_at"] is not None
    refused = machine.get(URL)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "authentication_failed"


def test_revoking_twice_is_harmless(world, acme_key):
    client = token_client(world.admin)
    first = client.post(revoke_url(acme_key[0])).json()

    second = client.post(revoke_url(acme_key[0]))

    assert second.status_code == 200
    assert second.json()["revoked_at"] == first["revoked_at"]


def test_it_validates_ownership_of_the_key_to_revoke(world, acme_key):
    response = token_client(world.outsider).post(revoke_url(acme_key[0]))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert not ApiKey.objects.get(pk=acme_key[0].pk).revoked
    assert token_client(world.admin).post(f"{URL}nosuchkey/revoke/").status_code == 404
