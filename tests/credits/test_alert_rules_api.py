"""Alert rules over the API: subscription admins keep every rule of their subscriptions,
project managers their own notification-only rules on environments they manage; others get
nothing, and bad input is a 400 in the one error shape."""

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from credits import webhooks
from credits.models import AlertRule
from tests import factories
from tests.factories import token_client

pytestmark = pytest.mark.django_db

RULES = "/api/v1/alert-rules/"


def one(rule) -> str:
    return f"{RULES}{rule.pk}/"


@pytest.fixture
def admin(world):
    return token_client(world.admin)


@pytest.fixture
def manager(world):
    return token_client(world.manager)


@pytest.fixture
def managers_rule(world):
    return factories.EnvironmentAlertRuleFactory(
        environment=world.environment, owner=world.manager, name="Production at half"
    )


@pytest.fixture
def team_rule(world):
    team = factories.TeamFactory(subscription=world.subscription, name="Writers")
    return AlertRule.objects.create(
        subscription=world.subscription,
        name="Writers",
        target=AlertRule.Target.TEAM,
        team=team,
        thresholds=[Decimal(90)],
    )


def errors(response) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    return error["details"]


def test_an_admin_keeps_rules_of_every_kind_with_every_channel(world, admin, loopback_allowed):
    hook, _ = webhooks.create_endpoint(
        subscription=world.subscription, name="Ops", url="http://127.0.0.1:9/hooks"
    )
    created = admin.post(
        RULES,
        {
            "name": "Production budget",
            "target": "environment",
            "environment": str(world.environment.public_id),
            "budget": "5000",
            "thresholds": ["80", "100"],
            "email_addresses": ["finance@acme.example"],
            "webhook": hook.pk,
        },
        format="json",
    )

    assert created.status_code == 201, created.content
    body = created.json()
    rule = AlertRule.objects.get()
    assert body == {
        "id": rule.pk,
        "subscription": {"id": world.subscription.pk, "name": "Acme"},
        "name": "Production budget",
        "target": "environment",
        "team": None,
        "user": None,
        "api_key": None,
        "environment": {"id": str(world.environment.public_id), "name": "Website / Production"},
        "budget": "5000.0000",
        "thresholds": ["80.00", "100.00"],
        "email_admins": True,
        "email_addresses": ["finance@acme.example"],
        "webhook": {"id": hook.pk, "name": "Ops"},
        "slack": None,
        "enabled": True,
        "owner": None,
        "created_at": body["created_at"],
    }
    assert admin.get(RULES).json()["results"] == [body]

    changed = admin.patch(one(rule), {"enabled": False, "thresholds": [50]}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["enabled"], changed.json()["thresholds"]) == (False, ["50.00"])
    assert changed.json()["webhook"] == {"id": hook.pk, "name": "Ops"}  # PATCH keeps the rest

    replaced = admin.put(
        one(rule), {"name": "Whole", "target": "allocation", "thresholds": [75]}, format="json"
    )
    assert replaced.status_code == 200, replaced.content
    assert (replaced.json()["environment"], replaced.json()["webhook"]) == (None, None)
    assert replaced.json()["budget"] is None

    assert admin.delete(one(rule)).status_code == 204
    assert not AlertRule.objects.exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"alert_rule.created", "alert_rule.changed", "alert_rule.deleted"} <= actions


def test_a_manager_keeps_notification_only_rules_on_environments_they_manage(
    world, manager, team_rule
):
    production = str(world.environment.public_id)
    created = manager.post(
        RULES,
        {
            "name": "Production at 80%",
            "target": "environment",
            "environment": production,
            "thresholds": [80],
            "email_addresses": ["bob@acme.example", "carol@acme.example"],
        },
        format="json",
    )

    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["owner"], body["email_admins"], body["budget"]) == (
        "bob@acme.example",
        False,
        None,
    )
    assert [rule["name"] for rule in manager.get(RULES).json()["results"]] == [
        "Production at 80%"
    ]  # not the admins' team rule
    assert manager.get(one(team_rule)).status_code == 404
    assert manager.patch(one(team_rule), {"enabled": False}, format="json").status_code == 404
    rule = AlertRule.objects.get(owner=world.manager)
    assert token_client(world.admin).get(one(rule)).json()["owner"] == "bob@acme.example"

    # Notification only: no channel of the subscription, no admins, people of the environment.
    assert "__all__" in errors(manager.patch(one(rule), {"email_admins": True}, format="json"))
    strangers = manager.patch(one(rule), {"email_addresses": ["x@evil.example"]}, format="json")
    assert "x@evil.example" in str(errors(strangers)["email_addresses"])
    staging = str(world.other_environment.public_id)  # Bob is only a member there
    assert "environment" in errors(
        manager.patch(one(rule), {"environment": staging}, format="json")
    )
    assert errors(manager.patch(one(rule), {"target": "allocation"}, format="json"))
    assert "webhook" in errors(manager.patch(one(rule), {"webhook": 1}, format="json"))

    assert manager.delete(one(rule)).status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"thresholds": []}, "thresholds"),
        ({"thresholds": ["-5"]}, "thresholds"),
        ({"thresholds": ["abc"]}, "thresholds"),
        ({"budget": "lots"}, "budget"),
        ({"budget": "0"}, "budget"),
        ({"target": "galaxy"}, "target"),
        ({"environment": "not-a-uuid"}, "environment"),
        ({"email_addresses": ["not an address"]}, "email_addresses"),
        ({"owner": "alice@acme.example"}, "owner"),
        ({"colour": "red"}, "colour"),
        ({"target": "team"}, "team"),
        ({"target": "allocation", "environment": "ENV"}, "__all__"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(world, admin, body, field):
    rule = {
        "name": "x",
        "target": "environment",
        "environment": str(world.environment.public_id),
        "thresholds": [50],
    }
    rule |= {k: str(world.environment.public_id) if v == "ENV" else v for k, v in body.items()}

    assert field in errors(admin.post(RULES, rule, format="json"))
    assert not AlertRule.objects.exists()


def test_another_subscriptions_admin_and_manager_reach_nothing(world, team_rule, managers_rule):
    outsider = token_client(world.outsider)
    assert outsider.get(RULES).json()["results"] == []
    for rule in (team_rule, managers_rule):
        assert outsider.get(one(rule)).status_code == 404
        assert outsider.patch(one(rule), {"enabled": False}, format="json").status_code == 404
        assert outsider.delete(one(rule)).status_code == 404
    foreign = {
        "name": "x",
        "target": "environment",
        "environment": str(world.environment.public_id),
        "thresholds": [50],
    }
    assert "environment" in errors(outsider.post(RULES, foreign, format="json"))
    refused = outsider.post(
        RULES,
        {
            "subscription": world.subscription.pk,
            "name": "x",
            "target": "allocation",
            "thresholds": [50],
        },
        format="json",
    )
    assert refused.status_code == 404
    assert AlertRule.objects.count() == 2


def test_members_and_api_keys_are_forbidden(world, managers_rule):
    member = token_client(world.member)
    assert member.get(RULES).status_code == 403
    assert member.get(one(managers_rule)).status_code == 403
    _, secret = factories.api_key(world.subscription)
    key = APIClient()
    key.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    assert key.get(RULES).status_code == 403
    assert APIClient().get(RULES).status_code == 401


def test_an_admin_watches_an_api_keys_budget_and_names_no_key_of_another_subscription(world, admin):
    key, _ = factories.api_key(world.subscription, name="Batch jobs")
    foreign_key, _ = factories.api_key(world.other_subscription, name="Theirs")
    rule = {"name": "Batch budget", "target": "api_key", "thresholds": [90]}

    assert "api_key" in errors(
        admin.post(RULES, rule | {"api_key": foreign_key.prefix}, format="json")
    )
    assert "api_key" in errors(admin.post(RULES, rule, format="json"))  # a key rule names it
    created = admin.post(RULES, rule | {"api_key": key.prefix}, format="json")

    assert created.status_code == 201, created.content
    assert created.json()["api_key"] == {"prefix": key.prefix, "name": "Batch jobs"}
    assert AlertRule.objects.get().api_key == key
