"""Alert rules: any thresholds of the allocation, a team's limit or a user's limit, each crossing
told once per period by email, a signed webhook and Slack."""

from decimal import Decimal

import pytest
import time_machine

from credits import webhooks
from credits.limits import set_team_limit
from credits.models import AlertFiring, AlertRule
from credits.tasks import evaluate_alert_rules
from tests import factories
from tests.admin_pages import assert_hidden_from_others, post_add_form, post_enabled_alert_rule
from tests.credits.conftest import set_allocation
from tests.factories import AlertRuleFactory, utc

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

EVENTS_URL = "/api/v1/events/"


@pytest.fixture
def slack(receivers):
    return receivers()


@pytest.fixture
def writers(world):
    team = factories.TeamFactory(subscription=world.subscription, name="Writers")
    factories.team_membership(world.member, team)
    set_team_limit(subscription=world.subscription, team=team, credits=Decimal("500"))
    return team


@pytest.fixture
def half_rule(world, writers, receiver, slack):
    hook, _ = webhooks.create_endpoint(
        subscription=world.subscription, name="Ops", url=receiver.url
    )
    channel, _ = webhooks.create_endpoint(
        subscription=world.subscription, name="#ops", url=slack.url, kind="slack"
    )
    return AlertRule.objects.create(
        subscription=world.subscription,
        name="Writers at half",
        target=AlertRule.Target.TEAM,
        team=writers,
        thresholds=[Decimal(50), Decimal(100)],
        email_addresses=["ops@acme.example"],
        webhook=hook,
        slack=channel,
    )


@time_machine.travel(utc(2026, 12, 7, 10), tick=False)
def test_a_team_at_half_its_limit_is_told_once_by_email_webhook_and_slack(
    world, key_client, event_payload, half_rule, receiver, slack, run_after_commit, mailoutbox
):
    key_client.post(EVENTS_URL, event_payload(credits="240"), format="json")
    assert run_after_commit(evaluate_alert_rules) == 0  # 48%: nothing yet

    key_client.post(EVENTS_URL, event_payload(credits="20"), format="json")
    assert run_after_commit(evaluate_alert_rules) == 1
    assert run_after_commit(evaluate_alert_rules) == 0  # once per threshold and period

    (email,) = mailoutbox
    assert email.to == ["alice@acme.example", "ops@acme.example"]
    assert email.subject == "Acme: Writers at half"
    summary = "Acme: team Writers used 50% of its limit for December 2026 (260 of 500 credits)."
    assert summary in email.body
    (event,) = receiver.bodies()
    assert event["type"] == "threshold.crossed"
    assert event["summary"] == summary
    assert event["data"]["target"] == {"type": "team", "id": half_rule.team_id, "name": "Writers"}
    assert event["data"]["threshold_percent"] == "50"
    assert (event["data"]["credits_used"], event["data"]["credits_limit"]) == (
        "260.0000",
        "500.0000",
    )
    (message,) = slack.bodies()
    assert message["text"] == summary
    assert [block["type"] for block in message["blocks"]] == [
        "header",
        "section",
        "section",
        "context",
    ]

    key_client.post(EVENTS_URL, event_payload(credits="240"), format="json")  # 500 of 500
    assert run_after_commit(evaluate_alert_rules) == 1
    assert [event["type"] for event in receiver.bodies()] == [
        "threshold.crossed",
        "limit.reached",
    ]
    assert len(mailoutbox) == 2


@time_machine.travel(utc(2026, 12, 7, 10), tick=False)
def test_allocation_and_user_rules(world, key_client, event_payload, run_after_commit, mailoutbox):
    set_allocation(world.subscription, "100")
    quarter = [Decimal("25.5")]
    AlertRuleFactory(subscription=world.subscription, name="A quarter", thresholds=quarter)
    AlertRule.objects.create(  # the user has no limit: no percentage to cross
        subscription=world.subscription,
        name="Carol",
        target=AlertRule.Target.USER,
        user=world.member,
        thresholds=[Decimal(1)],
    )
    key_client.post(EVENTS_URL, event_payload(credits="25.5"), format="json")

    run_after_commit(evaluate_alert_rules)

    (email,) = mailoutbox
    assert email.to == ["alice@acme.example"]
    assert "Acme used 25.5% of its base allocation for December 2026 (25.5 of 100 credits)." in (
        email.body
    )
    assert AlertFiring.objects.count() == 1


@time_machine.travel(utc(2026, 12, 7, 10), tick=False)
def test_an_excess_allowance_rule_counts_what_soft_mode_lets_past_the_allocation(
    world, key_client, event_payload, run_after_commit, mailoutbox
):
    set_allocation(world.subscription, "100", mode="soft", allowance="40")
    AlertRuleFactory(
        subscription=world.subscription,
        name="Excess at half",
        target=AlertRule.Target.EXCESS,
        email_admins=False,
        email_addresses=["finance@acme.example"],
    )
    key_client.post(EVENTS_URL, event_payload(credits="119"), format="json")
    assert run_after_commit(evaluate_alert_rules) == 0  # 19 of 40 excess credits

    key_client.post(EVENTS_URL, event_payload(credits="1"), format="json")

    assert run_after_commit(evaluate_alert_rules) == 1
    summary = "Acme used 50% of its excess allowance for December 2026 (20 of 40 credits)."
    assert [email.body for email in mailoutbox if email.to == ["finance@acme.example"]] == [
        f"{summary}\n\nAlert rule: Excess at half\n"
    ]


@time_machine.travel(utc(2026, 12, 7, 10), tick=False)
def test_a_period_has_its_own_crossings(
    world, key_client, event_payload, half_rule, run_after_commit, mailoutbox
):
    key_client.post(EVENTS_URL, event_payload(credits="300"), format="json")
    run_after_commit(evaluate_alert_rules)

    with time_machine.travel(utc(2027, 1, 7, 10), tick=False):
        key_client.post(EVENTS_URL, event_payload(credits="300"), format="json")
        run_after_commit(evaluate_alert_rules)

    assert len(mailoutbox) == 2
    assert "January 2027" in mailoutbox[1].body


def test_an_admin_defines_a_rule_in_the_admin(world, client, writers):
    response = post_enabled_alert_rule(
        client,
        world,
        name="Writers at half",
        target="team",
        team=writers.pk,
        thresholds="50, 90.5",
        email_addresses="ops@acme.example",
    )

    assert response.status_code == 302, response.content.decode()[-3000:]
    rule = AlertRule.objects.get()
    assert rule.thresholds == [Decimal(50), Decimal("90.5")]
    assert rule.email_addresses == ["ops@acme.example"]


def test_a_rule_names_a_team_of_its_own_subscription(world, client):
    foreign = factories.TeamFactory(subscription=world.other_subscription, name="Foreign")
    response = post_add_form(
        client,
        world,
        "credits_alertrule",
        name="x",
        target="team",
        team=foreign.pk,
        thresholds="-5",
    )

    assert response.status_code == 200
    assert not AlertRule.objects.exists()


def test_another_subscriptions_admin_and_a_member_get_nothing(world, client, writers):
    rule = AlertRule.objects.create(
        subscription=world.subscription,
        name="Writers at half",
        target=AlertRule.Target.TEAM,
        team=writers,
        thresholds=[Decimal(50)],
    )
    assert_hidden_from_others(client, world, [rule], "Writers at half")
