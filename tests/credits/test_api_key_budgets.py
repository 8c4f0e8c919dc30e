"""An API key's budget caps what the key records in each period, like a user's limit: refused
events store nothing, a batch keeps exactly the events that fit, the balance shows the calling
key's budget, and alert rules watch it."""

from decimal import Decimal

import pytest
import time_machine
from rest_framework.test import APIClient

from accounts.audit import AuditEvent
from accounts.models import ApiKey
from credits import webhooks
from credits.limits import set_user_limit
from credits.models import AlertFiring, AlertRule, ApiKeyPeriodUsage, CreditEvent
from credits.tasks import evaluate_alert_rules
from tests import factories
from tests.admin_pages import post_add_form, post_enabled_alert_rule
from tests.factories import frozen_at, utc

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events/"
BATCH = "/api/v1/events/batch/"
BALANCE = "/api/v1/balance/"

frozen_now = frozen_at(utc(2026, 12, 7, 10))


class Machine:
    """An API key of Acme with a budget of 10 credits per period, and a client using it."""

    def __init__(self, subscription, *, name="Nightly jobs", budget="10"):
        self.api_key, secret = factories.api_key(subscription, name=name)
        ApiKey.objects.filter(pk=self.api_key.pk).update(credit_budget=Decimal(budget))
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")

    def post(self, payload):
        return self.client.post(EVENTS, payload, format="json")

    def used(self) -> Decimal:
        counter = ApiKeyPeriodUsage.objects.filter(api_key=self.api_key).first()
        return counter.credits_used if counter else Decimal(0)


@pytest.fixture
def machine(world, product) -> Machine:
    return Machine(world.subscription)


def set_budget(world, api_key: ApiKey, budget):
    response = factories.token_client(world.admin).patch(
        f"/api/v1/api-keys/{api_key.prefix}/", {"credit_budget": budget}, format="json"
    )
    assert response.status_code == 200, response.content


def test_an_event_beyond_the_keys_budget_is_refused_and_stores_nothing(
    world, machine, event_payload
):
    assert machine.post(event_payload(credits="6")).status_code == 201

    refused = machine.post(event_payload(idempotency_key="over", credits="5"))

    assert refused.status_code == 402
    assert refused.json() == {
        "error": {
            "code": "api_key_budget_exceeded",
            "message": "This event would take the API key beyond its credit budget.",
            "details": {"api_key": machine.api_key.prefix, "budget": "10.0000"},
        }
    }
    assert CreditEvent.objects.count() == 1
    assert machine.used() == Decimal(6)
    assert machine.post(event_payload(credits="4")).status_code == 201  # exactly the budget
    assert machine.used() == Decimal(10)


def test_a_refused_event_replayed_is_refused_again_until_the_budget_allows_it(
    world, machine, event_payload
):
    machine.post(event_payload(credits="8"))
    over = event_payload(idempotency_key="over", credits="5")
    assert machine.post(over).status_code == 402

    assert machine.post(over).status_code == 402  # nothing was kept: judged again, refused
    set_budget(world, machine.api_key, "20")
    accepted = machine.post(over)

    assert accepted.status_code == 201  # the key was free to use again
    assert machine.post(over).status_code == 200  # and now it is a replay, charged once
    assert machine.used() == Decimal(13)
    assert CreditEvent.objects.filter(idempotency_key="over").count() == 1


def test_a_batch_accepts_exactly_the_events_that_fit_in_order(world, machine, event_payload):
    events = [
        event_payload(idempotency_key="a", credits="4"),
        event_payload(idempotency_key="b", credits="4"),
        event_payload(idempotency_key="c", credits="4"),
        event_payload(idempotency_key="d", credits="2"),
        event_payload(idempotency_key="e", credits="0.0001"),
    ]

    body = machine.client.post(BATCH, {"events": events}, format="json").json()

    assert [result["status"] for result in body["results"]] == [201, 201, 402, 201, 402]
    assert body["results"][2]["error"]["code"] == "api_key_budget_exceeded"
    assert (body["accepted"], body["refused"]) == (3, 2)
    assert sorted(CreditEvent.objects.values_list("idempotency_key", flat=True)) == ["a", "b", "d"]
    assert machine.used() == Decimal(10)
    assert body["balance"]["api_key"] == {
        "id": machine.api_key.prefix,
        "limit": "10.0000",
        "used": "10.0000",
        "remaining": "0.0000",
    }


def test_each_key_has_its_own_budget_and_a_key_without_one_is_only_counted(
    world, machine, event_payload
):
    other = Machine(world.subscription, name="Backend", budget="1")
    unbudgeted = Machine(world.subscription, name="Web")
    ApiKey.objects.filter(pk=unbudgeted.api_key.pk).update(credit_budget=None)
    machine.post(event_payload(credits="10"))

    assert other.post(event_payload(credits="1")).status_code == 201
    assert unbudgeted.post(event_payload(credits="500")).status_code == 201
    assert machine.post(event_payload(credits="1")).status_code == 402
    assert unbudgeted.used() == Decimal(500)

    set_budget(world, unbudgeted.api_key, "400")  # below what it used: blocked from now on

    assert unbudgeted.post(event_payload(credits="0.0001")).status_code == 402
    assert CreditEvent.objects.count() == 3


def test_the_first_limit_broken_is_the_code_the_key_budget_comes_last(
    world, machine, event_payload
):
    set_user_limit(subscription=world.subscription, user=world.member, credits=Decimal(5))

    both = machine.post(event_payload(credits="11"))
    key_only = machine.post(event_payload(credits="11", user=world.admin.email))

    assert both.json()["error"]["code"] == "user_limit_exceeded"
    assert key_only.json()["error"]["code"] == "api_key_budget_exceeded"


def test_adjustments_bypass_the_keys_budget(world, machine, event_payload):
    machine.post(event_payload(credits="10"))

    factories.adjustment(world, "25", "Re-run billed twice", user=world.member)

    assert CreditEvent.objects.filter(kind=CreditEvent.Kind.ADJUSTMENT).count() == 1
    assert machine.used() == Decimal(10)  # an adjustment is nobody's key's spending


def test_the_balance_shows_the_calling_keys_budget_only(world, machine, event_payload):
    machine.post(event_payload(credits="2.5"))
    unbudgeted = Machine(world.subscription, name="Web")
    ApiKey.objects.filter(pk=unbudgeted.api_key.pk).update(credit_budget=None)

    own = machine.client.get(BALANCE).json()
    recorded = machine.post(event_payload(credits="1")).json()

    assert own["api_key"] == {
        "id": machine.api_key.prefix,
        "limit": "10.0000",
        "used": "2.5000",
        "remaining": "7.5000",
    }
    assert recorded["balance"]["api_key"]["used"] == "3.5000"
    assert unbudgeted.client.get(BALANCE).json()["api_key"] is None
    assert factories.token_client(world.admin).get(BALANCE).json()["api_key"] is None


def test_another_subscriptions_key_budget_is_out_of_reach(world, machine, event_payload):
    globex = Machine(world.other_subscription, name="Globex jobs", budget="1")
    foreign = event_payload(environment=str(world.foreign_environment.public_id), user=None)

    assert globex.post(foreign | {"credits": "1"}).status_code == 201
    assert machine.post(event_payload(credits="5")).status_code == 201  # Acme's own budget

    outsider = factories.token_client(world.outsider)
    response = outsider.patch(
        f"/api/v1/api-keys/{machine.api_key.prefix}/", {"credit_budget": "999"}, format="json"
    )
    assert response.status_code == 404
    assert globex.client.get(BALANCE).json()["api_key"]["used"] == "1.0000"
    assert machine.client.get(BALANCE).json()["api_key"]["used"] == "5.0000"


# --- Alerts ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("eager_celery")
def test_a_rule_on_a_keys_budget_fires_once_per_threshold_and_period(
    world, machine, event_payload, run_after_commit, mailoutbox, receiver
):
    hook, _ = webhooks.create_endpoint(
        subscription=world.subscription, name="Ops", url=receiver.url
    )
    AlertRule.objects.create(
        subscription=world.subscription,
        name="Nightly jobs at half",
        target=AlertRule.Target.API_KEY,
        api_key=machine.api_key,
        thresholds=[Decimal(50)],
        webhook=hook,
    )
    machine.post(event_payload(credits="4.9"))
    assert run_after_commit(evaluate_alert_rules) == 0  # 49%

    machine.post(event_payload(credits="0.1"))
    assert run_after_commit(evaluate_alert_rules) == 1
    machine.post(event_payload(credits="1"))
    assert run_after_commit(evaluate_alert_rules) == 0  # once per threshold and period

    summary = (
        "Acme: API key Nightly jobs used 50% of its budget for December 2026 (5 of 10 credits)."
    )
    (email,) = mailoutbox
    assert email.to == ["alice@acme.example"]
    assert summary in email.body
    (event,) = receiver.bodies()
    assert event["summary"] == summary
    assert event["data"]["target"] == {
        "type": "api_key",
        "prefix": machine.api_key.prefix,
        "name": "Nightly jobs",
    }
    assert AlertFiring.objects.count() == 1

    with time_machine.travel(utc(2027, 1, 7, 10), tick=False):  # a new period: told again
        machine.post(event_payload(credits="5"))
        assert run_after_commit(evaluate_alert_rules) == 1


def test_a_rule_names_a_key_of_its_own_subscription_in_the_admin(world, client, machine):
    globex_key, _ = factories.api_key(world.other_subscription, name="Globex jobs")

    foreign = post_add_form(
        client,
        world,
        "credits_alertrule",
        name="x",
        target="api_key",
        api_key=globex_key.pk,
        thresholds="50",
    )
    missing = post_add_form(
        client, world, "credits_alertrule", name="x", target="api_key", thresholds="50"
    )
    own = post_enabled_alert_rule(
        client,
        world,
        name="Nightly jobs at 80%",
        target="api_key",
        api_key=machine.api_key.pk,
        thresholds="80",
    )

    assert foreign.status_code == missing.status_code == 200  # the form again, with errors
    assert own.status_code == 302, own.content.decode()[-2000:]
    assert AlertRule.objects.get().api_key == machine.api_key
    assert AuditEvent.objects.filter(action="admin.added").count() == 1
