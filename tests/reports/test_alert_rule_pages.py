"""A project manager's alert rules on their own pages (``/usage/alerts/``): the API's rules
(``tests/credits/test_alert_rules_api.py``), as forms. A manager reaches the rules they own on
environments they manage; another subscription's people and a member get nothing."""

from decimal import Decimal

import pytest
from django.test import Client

from accounts.audit import AuditEvent
from credits.models import AlertRule
from tests import factories
from tests.reports.test_schedule_pages import browser

pytestmark = pytest.mark.django_db

PAGES = "/usage/alerts/"


def page(rule, suffix: str = "") -> str:
    return f"{PAGES}{rule.pk}/{suffix}"


def fields(environment, **overrides) -> dict:
    return {
        "name": "Production at 80%",
        "environment": environment.pk,
        "thresholds": "80, 100",
        "budget": "5000",
        "email_addresses": "bob@acme.example\ncarol@acme.example",
        "enabled": "on",
        **overrides,
    }


def test_a_manager_adds_edits_pauses_and_deletes_an_alert(world):
    bob = browser(world.manager)
    assert f'href="{PAGES}"' in bob.get("/usage/").content.decode()  # "Alerts" in the top bar
    assert f'href="{PAGES}"' not in browser(world.member).get("/usage/").content.decode()
    form = bob.get(f"{PAGES}new/").content.decode()
    assert "bob@acme.example" in form  # the address to start from: their own
    assert "Website / Production" in form and "Website / Staging" not in form

    created = bob.post(f"{PAGES}new/", fields(world.environment))

    rule = AlertRule.objects.get()
    assert created.status_code == 302, created.content.decode()[-3000:]
    assert created["Location"] == page(rule)
    assert (rule.owner, rule.target, rule.subscription, rule.email_admins) == (
        world.manager,
        "environment",
        world.subscription,
        False,
    )
    assert (rule.thresholds, rule.budget) == ([Decimal(80), Decimal(100)], Decimal(5000))
    assert rule.email_addresses == ["bob@acme.example", "carol@acme.example"]
    listing = bob.get(PAGES).content.decode()
    assert "Production at 80%" in listing and "80%, 100% of 5,000.0000 credits" in listing

    edited = bob.post(page(rule), fields(world.environment, budget="", thresholds="25"))
    assert edited.status_code == 302
    rule.refresh_from_db()
    assert (rule.thresholds, rule.budget) == ([Decimal(25)], None)

    bob.post(page(rule, "pause/"))
    rule.refresh_from_db()
    assert not rule.enabled
    assert "Resume" in bob.get(page(rule)).content.decode()

    assert bob.get(page(rule, "delete/")).status_code == 200
    assert bob.post(page(rule, "delete/"))["Location"] == PAGES
    assert not AlertRule.objects.exists()
    actions = list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
    assert actions[0] == "alert_rule.created" and actions[-1] == "alert_rule.deleted"


def test_the_form_refuses_strangers_and_environments_the_manager_does_not_manage(world):
    bob = browser(world.manager)

    strangers = bob.post(
        f"{PAGES}new/", fields(world.environment, email_addresses="x@evil.example")
    )
    staging = bob.post(f"{PAGES}new/", fields(world.other_environment))
    foreign = bob.post(f"{PAGES}new/", fields(world.foreign_environment))

    assert strangers.status_code == staging.status_code == foreign.status_code == 200
    assert "Not among the environment&#x27;s people: x@evil.example" in (strangers.content.decode())
    assert "Select a valid choice" in staging.content.decode()
    assert not AlertRule.objects.exists()


def test_other_people_reach_no_rule_and_a_member_no_page(world):
    rule = factories.EnvironmentAlertRuleFactory(
        environment=world.environment, owner=world.manager, name="Production at half"
    )
    globex_manager = factories.UserFactory(email="ivy@globex.example")
    factories.membership(globex_manager, "project_manager", environment=world.foreign_environment)
    ivy = browser(globex_manager)
    assert "Production at half" not in ivy.get(PAGES).content.decode()
    for suffix in ("", "delete/"):
        assert ivy.get(page(rule, suffix)).status_code == 404
    for suffix in ("", "pause/", "delete/"):
        assert ivy.post(page(rule, suffix), fields(world.foreign_environment)).status_code == 404
    rule.refresh_from_db()
    assert rule.enabled and rule.name == "Production at half"

    carol = browser(world.member)
    assert carol.get(PAGES).status_code == 403
    assert carol.get(f"{PAGES}new/").status_code == 403
    assert carol.get(page(rule)).status_code == 403
    assert Client().get(PAGES).status_code == 302  # to the login


def test_the_form_starts_from_the_managers_address_and_shows_thresholds_as_typed(world):
    bob = browser(world.manager)
    new = bob.get(f"{PAGES}new/").content.decode()
    assert ">bob@acme.example</textarea>" in new.replace("\n", "")
    assert "[]" not in new

    bob.post(f"{PAGES}new/", fields(world.environment, thresholds="50, 90.5, 100"))
    edit = bob.get(page(AlertRule.objects.get())).content.decode()
    assert 'value="50, 90.5, 100"' in edit
    assert "bob@acme.example\ncarol@acme.example</textarea>" in edit


def test_a_long_list_of_alerts_is_paged(world):
    for number in range(26):
        AlertRule.objects.create(
            subscription=world.subscription,
            owner=world.manager,
            target=AlertRule.Target.ENVIRONMENT,
            environment=world.environment,
            name=f"Rule {number:02}",
            thresholds=[Decimal(80)],
            email_addresses=[world.manager.email],
        )
    bob = browser(world.manager)

    first, second = bob.get(PAGES).content.decode(), bob.get(PAGES, {"page": 2}).content.decode()

    assert first.count("<tr data-rule=") == 25 and "Rule 24" in first and "Rule 25" not in first
    assert second.count("<tr data-rule=") == 1 and "Rule 25" in second
    assert 'aria-label="Pages of alerts"' in first and 'href="?page=2" rel="next"' in first
    assert 'aria-current="page"><span class="visually-hidden">Page </span>2<' in second
