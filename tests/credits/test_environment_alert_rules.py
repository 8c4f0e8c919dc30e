"""A project manager's alert rules: an environment's credits this period against a budget (or
the subscription's allocation), each threshold told once per period, by email only."""

from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Membership, Role
from credits import webhooks
from credits.models import AlertFiring, AlertRule
from credits.tasks import evaluate_alert_rules
from tests import factories
from tests.admin_pages import admin_url, post_enabled_alert_rule
from tests.factories import utc

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

EVENTS_URL = "/api/v1/events/"


@pytest.fixture
def production_rule(world):
    return factories.EnvironmentAlertRuleFactory(
        environment=world.environment,
        owner=world.manager,
        name="Production at half",
        budget=Decimal("100"),
        thresholds=[Decimal(50), Decimal(100)],
        email_addresses=["bob@acme.example", "carol@acme.example"],
    )


@time_machine.travel(utc(2026, 12, 7, 10), tick=False)
def test_a_managers_rule_emails_once_per_threshold_and_reaches_no_endpoint(
    world, key_client, event_payload, production_rule, receiver, run_after_commit, mailoutbox
):
    webhooks.create_endpoint(subscription=world.subscription, name="Ops", url=receiver.url)
    key_client.post(EVENTS_URL, event_payload(credits="49"), format="json")
    assert run_after_commit(evaluate_alert_rules) == 0

    key_client.post(EVENTS_URL, event_payload(credits="2"), format="json")
    assert run_after_commit(evaluate_alert_rules) == 1
    assert run_after_commit(evaluate_alert_rules) == 0

    (email,) = mailoutbox
    assert email.to == ["bob@acme.example", "carol@acme.example"]
    assert email.subject == "Acme: Production at half"
    assert (
        "Acme: environment Website / Production used 50% of its budget for December 2026 "
        "(51 of 100 credits)." in email.body
    )
    assert receiver.bodies() == []  # notification only: no channel of the subscription

    key_client.post(EVENTS_URL, event_payload(credits="60"), format="json")
    assert run_after_commit(evaluate_alert_rules) == 1
    assert "used 100% of its budget" in mailoutbox[1].body


@time_machine.travel(utc(2026, 12, 7, 10), tick=False)
def test_without_a_budget_the_thresholds_are_of_the_base_allocation_and_other_environments_do_not_count(  # noqa: E501
    world, key_client, event_payload, run_after_commit, mailoutbox
):
    factories.EnvironmentAlertRuleFactory(
        environment=world.environment, owner=world.manager, name="A tenth", thresholds=[10]
    )
    factories.membership(world.member, Role.MEMBER, environment=world.other_environment)
    staging = str(world.other_environment.public_id)
    key_client.post(EVENTS_URL, event_payload(credits="500", environment=staging), format="json")
    key_client.post(EVENTS_URL, event_payload(credits="99"), format="json")
    assert run_after_commit(evaluate_alert_rules) == 0  # 99 of the allocation's 1,000

    key_client.post(EVENTS_URL, event_payload(credits="1"), format="json")

    assert run_after_commit(evaluate_alert_rules) == 1
    (email,) = mailoutbox
    assert "Production used 10% of the base allocation for December 2026 (100 of 1000" in (
        email.body
    )


def test_a_new_local_month_counts_afresh_though_utc_is_still_in_the_old_one(
    world, key_client, event_payload, production_rule, run_after_commit, mailoutbox
):
    """Prague's 1 January at 00:30 is 31 December in UTC: the usage is January's."""
    with time_machine.travel(utc(2026, 12, 31, 12), tick=False):
        key_client.post(EVENTS_URL, event_payload(credits="49"), format="json")
        assert run_after_commit(evaluate_alert_rules) == 0

    with time_machine.travel(utc(2026, 12, 31, 23, 30), tick=False):
        key_client.post(EVENTS_URL, event_payload(credits="2"), format="json")
        assert run_after_commit(evaluate_alert_rules) == 0  # 2 of January's 100
        key_client.post(EVENTS_URL, event_payload(credits="48"), format="json")
        assert run_after_commit(evaluate_alert_rules) == 1

    (email,) = mailoutbox
    assert "used 50% of its budget for January 2027 (50 of 100 credits)." in email.body


@time_machine.travel(utc(2026, 12, 7, 10), tick=False)
def test_a_rule_whose_owner_no_longer_manages_the_environment_stays_silent(
    world, key_client, event_payload, production_rule, run_after_commit, mailoutbox
):
    Membership.objects.filter(user=world.manager, environment=world.environment).update(
        role=Role.MEMBER
    )
    key_client.post(EVENTS_URL, event_payload(credits="100"), format="json")

    assert run_after_commit(evaluate_alert_rules) == 0
    assert mailoutbox == []


@time_machine.travel(utc(2026, 12, 7, 10), tick=False)
def test_the_evaluation_reads_every_environment_in_the_same_few_queries(
    world, key_client, event_payload, django_assert_max_num_queries
):
    """The evaluation's queries (its messages are sent after it commits, by other tasks) do
    not grow with the number of environment rules: the usage of every watched environment
    is one query over the rollup's monthly rows."""
    factories.EnvironmentAlertRuleFactory(environment=world.environment, owner=world.manager)
    key_client.post(EVENTS_URL, event_payload(credits="600"), format="json")
    with CaptureQueriesContext(connection) as one_rule:
        assert evaluate_alert_rules() == 1
    queries = len(one_rule)  # before a request resets the connection's log
    assert queries <= 9

    for number in range(12):
        environment = factories.EnvironmentFactory(
            project=world.environment.project, name=f"Env {number}"
        )
        factories.membership(world.manager, Role.PROJECT_MANAGER, environment=environment)
        factories.EnvironmentAlertRuleFactory(environment=environment, owner=world.manager)
        factories.EnvironmentAlertRuleFactory(environment=world.environment, owner=world.manager)
    key_client.post(EVENTS_URL, event_payload(credits="1"), format="json")

    with django_assert_max_num_queries(queries):
        assert evaluate_alert_rules() == 12  # the new rules on Production; the others at 0
    assert AlertFiring.objects.count() == 13


def test_an_admin_defines_an_environment_rule_in_the_admin_and_keeps_a_managers_to_email(
    world, client, loopback_allowed
):
    response = post_enabled_alert_rule(
        client,
        world,
        name="Production budget",
        target="environment",
        environment=world.environment.pk,
        budget="5000",
        thresholds="80, 100",
    )
    assert response.status_code == 302, response.content.decode()[-3000:]
    rule = AlertRule.objects.get()
    assert (rule.environment, rule.budget, rule.owner) == (
        world.environment,
        Decimal(5000),
        None,
    )

    managers = factories.EnvironmentAlertRuleFactory(
        environment=world.environment, owner=world.manager, name="Bob's"
    )
    hook, _ = webhooks.create_endpoint(
        subscription=world.subscription, name="Ops", url="http://127.0.0.1:9/hooks"
    )
    page = client.get(admin_url(managers, "change")).content.decode()
    assert "bob@acme.example" in page  # the owner, read-only
    refused = client.post(
        admin_url(managers, "change"),
        {
            "name": "Bob's",
            "target": "environment",
            "environment": world.environment.pk,
            "thresholds": "50",
            "email_addresses": "bob@acme.example",
            "webhook": hook.pk,
            "enabled": "on",
        },
    )
    assert refused.status_code == 200
    assert "emails people of its environment only" in refused.content.decode()
    managers.refresh_from_db()
    assert managers.webhook is None
