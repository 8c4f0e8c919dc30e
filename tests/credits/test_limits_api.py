"""Subscription admins set, read and lift per-user and per-team limits over the API."""

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from credits.models import CreditEvent, CreditLimit
from tests import factories
from tests.factories import token_client

# On the real clock: also run at each pinned moment (tests/conftest.py).
pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]

LIMITS = "/api/v1/limits/"


def user_url(user) -> str:
    return f"{LIMITS}users/{user.pk}/"


def team_url(team) -> str:
    return f"{LIMITS}teams/{team.pk}/"


@pytest.fixture
def team(world):
    team = factories.TeamFactory(subscription=world.subscription, name="Support")
    factories.team_membership(world.member, team)
    return team


@pytest.fixture
def foreign_team(world):
    return factories.TeamFactory(subscription=world.other_subscription, name="Globex ops")


# --- Setting, reading, lifting ---------------------------------------------------------------


def test_admin_sets_reads_and_lifts_a_user_limit(world):
    client = token_client(world.admin)

    created = client.put(user_url(world.member), {"credits": "500.0000"}, format="json")

    assert created.status_code == 200
    assert created.json() == {
        "kind": "user",
        "user": {"id": world.member.pk, "email": world.member.email},
        "team": None,
        "credits": "500.0000",
        "credits_used": "0.0000",
        "remaining": "500.0000",
        "updated_at": created.json()["updated_at"],
    }
    replaced = client.put(user_url(world.member), {"credits": "250.5"}, format="json")
    assert replaced.json()["credits"] == "250.5000"
    assert CreditLimit.objects.get(user=world.member).credits == Decimal("250.5")
    assert client.get(user_url(world.member)).json()["credits"] == "250.5000"

    assert client.delete(user_url(world.member)).status_code == 204

    assert not CreditLimit.objects.exists()
    missing = client.get(user_url(world.member))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert client.delete(user_url(world.member)).status_code == 404


def test_admin_sets_reads_and_lifts_a_team_limit(world, team):
    client = token_client(world.admin)

    response = client.put(team_url(team), {"credits": 1200}, format="json")

    assert response.status_code == 200
    assert response.json()["kind"] == "team"
    assert response.json()["team"] == {"id": team.pk, "name": "Support"}
    assert response.json()["credits"] == "1200.0000"
    assert client.get(team_url(team)).json()["credits"] == "1200.0000"
    assert client.delete(team_url(team)).status_code == 204
    assert client.get(team_url(team)).status_code == 404


def test_the_list_shows_user_limits_then_team_limits(world, team):
    client = token_client(world.admin)
    client.put(team_url(team), {"credits": "900"}, format="json")
    client.put(user_url(world.member), {"credits": "50"}, format="json")
    client.put(user_url(world.admin), {"credits": "70"}, format="json")
    other_team = factories.TeamFactory(subscription=world.other_subscription)
    CreditLimit.objects.create(
        subscription=world.other_subscription, team=other_team, credits=Decimal(1)
    )

    body = client.get(LIMITS).json()

    assert body["count"] == 3
    assert [(limit["kind"], limit["credits"]) for limit in body["results"]] == [
        ("user", "70.0000"),  # alice@
        ("user", "50.0000"),  # carol@
        ("team", "900.0000"),
    ]


def test_members_of_any_role_can_have_a_limit(world):
    client = token_client(world.admin)

    assert client.put(user_url(world.manager), {"credits": "10"}).status_code == 200
    assert client.put(user_url(world.admin), {"credits": "10"}).status_code == 200


# --- Validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"credits": "-1"},
        {"credits": -0.5},
        {"credits": "1.00001"},
        {"credits": "five hundred"},
        {"credits": "Infinity"},
        {"credits": "1" * 15},
        {"credits": None},
        {"credits": True},
        {},
        ["500"],
    ],
)
def test_invalid_limits_are_refused_in_the_shared_shape(world, team, body):
    client = token_client(world.admin)

    for url in (user_url(world.member), team_url(team)):
        response = client.put(url, body, format="json")

        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert error["message"] == "Some fields are invalid."
        assert set(error["details"]) <= {"credits", "non_field_errors"}
    assert not CreditLimit.objects.exists()


def test_zero_is_a_valid_limit(world):
    response = token_client(world.admin).put(user_url(world.member), {"credits": "0"})

    assert response.status_code == 200
    assert response.json()["credits"] == "0.0000"


# --- Who may --------------------------------------------------------------------------------------


def test_it_validates_ownership_of_users(world):
    outsider = token_client(world.outsider)

    assert outsider.put(user_url(world.member), {"credits": "1"}).status_code == 404
    assert outsider.get(user_url(world.member)).status_code == 404
    assert (
        outsider.put(
            f"{user_url(world.member)}?subscription={world.subscription.pk}", {"credits": "1"}
        ).status_code
        == 404
    )
    assert (
        token_client(world.admin).put(user_url(world.outsider), {"credits": "1"}).status_code == 404
    )
    stranger = factories.UserFactory()
    assert token_client(world.admin).put(user_url(stranger), {"credits": "1"}).status_code == 404
    assert token_client(world.admin).get(f"{LIMITS}users/999999/").status_code == 404
    assert not CreditLimit.objects.exists()


def test_it_validates_ownership_of_teams_and_limits(world, team, foreign_team):
    token_client(world.admin).put(team_url(team), {"credits": "10"})
    outsider = token_client(world.outsider)

    assert outsider.get(team_url(team)).status_code == 404
    assert outsider.delete(team_url(team)).status_code == 404
    assert outsider.get(LIMITS).json()["count"] == 0
    assert (
        token_client(world.admin).put(team_url(foreign_team), {"credits": "1"}).status_code == 404
    )
    assert CreditLimit.objects.get().team == team


@pytest.mark.parametrize("persona", ["manager", "member"])
def test_lower_roles_are_forbidden(world, team, persona):
    client = token_client(getattr(world, persona))

    assert client.get(LIMITS).status_code == 403
    assert client.put(user_url(world.member), {"credits": "1"}).status_code == 403
    assert client.get(user_url(world.member)).status_code == 403
    assert client.delete(team_url(team)).status_code == 403
    assert client.put(team_url(team), {"credits": "1"}).status_code == 403
    assert not CreditLimit.objects.exists()


def test_an_api_key_cannot_manage_limits(world, team):
    _, secret = factories.api_key(world.subscription)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")

    assert client.get(LIMITS).status_code == 403
    assert client.put(user_url(world.member), {"credits": "1"}).status_code == 403
    assert client.put(team_url(team), {"credits": "1"}).status_code == 403


# --- Changing a limit mid-period ---------------------------------------------------------------


def test_lowering_a_limit_below_usage_blocks_further_use_without_rewriting_history(
    world, key_client, event_payload
):
    admin = token_client(world.admin)
    admin.put(user_url(world.member), {"credits": "10"}, format="json")
    for _ in range(4):
        assert key_client.post("/api/v1/events/", event_payload(), format="json").status_code == 201

    lowered = admin.put(user_url(world.member), {"credits": "5"}, format="json").json()

    assert (lowered["credits_used"], lowered["remaining"]) == ("6.0000", "0.0000")
    refused = key_client.post("/api/v1/events/", event_payload(credits="0.5"), format="json")
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "user_limit_exceeded"
    assert CreditEvent.objects.count() == 4
    assert sum(CreditEvent.objects.values_list("credits", flat=True)) == Decimal("6")

    raised = admin.put(user_url(world.member), {"credits": "7"}, format="json").json()

    assert raised["remaining"] == "1.0000"
    accepted = key_client.post("/api/v1/events/", event_payload(credits="1"), format="json")
    assert accepted.status_code == 201
