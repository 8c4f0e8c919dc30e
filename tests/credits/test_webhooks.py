"""Signed webhooks and Slack: what a receiver on this machine gets, checked with nothing but
the README's instructions; retries, disabling, rotation, and addresses that are refused."""

import json
import logging
import re
import smtplib
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
import time_machine
from django.core.mail.backends.locmem import EmailBackend
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from prometheus_client import REGISTRY

from credits import notifications, webhooks
from credits.billing import period_for
from credits.models import AlertRule, ThresholdAlert, WebhookDelivery, WebhookEndpoint
from credits.tasks import queue_due_webhooks, send_threshold_alert
from tests import factories
from tests.admin_pages import admin_url, assert_hidden_from_others, post_add_form
from tests.credits.conftest import set_allocation
from tests.factories import utc

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

README = Path(__file__).resolve().parents[2] / "README.md"
EVENTS_URL = "/api/v1/events/"


def readme_verify():
    """The ``verify`` function of the README's "Alerts and webhooks" section, as a reader
    would paste it."""
    text = README.read_text()
    section = text[text.index("## Alerts and webhooks") :]
    section = section[: section.index("\n## ", 5)]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    namespace = {}
    exec(code, namespace)  # noqa: S102 - the README's own snippet
    return namespace["verify"]


@pytest.fixture
def endpoint(world, receiver):
    return webhooks.create_endpoint(subscription=world.subscription, name="Ops", url=receiver.url)


@time_machine.travel(utc(2026, 3, 20, 12), tick=False)
def test_a_threshold_crossed_by_an_event_is_posted_signed_as_the_readme_says(
    world, key_client, event_payload, endpoint, receiver, run_after_commit
):
    set_allocation(world.subscription, "10")
    _, secret = endpoint

    response = run_after_commit(
        key_client.post, EVENTS_URL, event_payload(credits="8.5"), format="json"
    )

    assert response.status_code == 201
    ((headers, body),) = receiver.received
    assert readme_verify()(secret, headers["Creditdesk-Signature"], body)
    assert not readme_verify()("whsec_another", headers["Creditdesk-Signature"], body)
    assert not readme_verify()(secret, headers["Creditdesk-Signature"], body + b" ")
    event = json.loads(body)
    assert headers["Creditdesk-Event-Type"] == event["type"] == "threshold.crossed"
    assert headers["Creditdesk-Event-Id"] == event["id"]
    assert event["subscription"] == {"id": world.subscription.pk, "name": "Acme"}
    assert event["data"]["target"] == {"type": "allocation"}
    assert event["data"]["threshold_percent"] == "80"
    assert (event["data"]["credits_used"], event["data"]["credits_limit"]) == (
        "8.5000",
        "10.0000",
    )
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 1, 200)

    send_threshold_alert(ThresholdAlert.objects.get().pk)  # a redelivered task: nothing more
    assert len(receiver.received) == 1


@time_machine.travel(utc(2026, 3, 20, 12), tick=False)
def test_an_smtp_outage_delays_the_email_not_the_webhook(
    world, endpoint, receiver, run_after_commit, mailoutbox
):
    set_allocation(world.subscription, "10")
    alert = ThresholdAlert.objects.create(
        subscription=world.subscription,
        period=period_for(subscription=world.subscription, instant=timezone.now()),
        threshold="allocation_80",
    )

    smtp_down = mock.patch.object(EmailBackend, "send_messages", side_effect=smtplib.SMTPException)
    with smtp_down, pytest.raises(smtplib.SMTPException):
        run_after_commit(notifications.send_alert, alert_id=alert.pk)
    assert [event["type"] for event in receiver.bodies()] == ["threshold.crossed"]

    assert run_after_commit(notifications.send_alert, alert_id=alert.pk) is True  # the retry
    assert len(mailoutbox) == 1 and len(receiver.received) == 1


@time_machine.travel(utc(2026, 3, 20, 12), tick=False)
def test_a_failing_receiver_is_retried_with_backoff_and_never_blocks_recording(
    world, key_client, event_payload, endpoint, receiver, run_after_commit, mailoutbox
):
    set_allocation(world.subscription, "10")
    receiver.status = 500
    attempts_before = {outcome: webhook_attempts(outcome) for outcome in ("delivered", "failed")}

    response = run_after_commit(
        key_client.post, EVENTS_URL, event_payload(credits="8.5"), format="json"
    )

    assert response.status_code == 201
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("pending", 1, 500)
    assert delivery.next_attempt_at == timezone.now() + timedelta(seconds=30)
    assert run_after_commit(queue_due_webhooks) == 0  # not due yet

    with time_machine.travel(utc(2026, 3, 20, 12, 0, 31), tick=False):
        run_after_commit(queue_due_webhooks)
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert delivery.next_attempt_at == utc(2026, 3, 20, 12, 1, 31)  # 60 s later

    receiver.status = 204
    with time_machine.travel(utc(2026, 3, 20, 12, 2), tick=False):
        run_after_commit(queue_due_webhooks)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 3, 204)
    ids = {json.loads(body)["id"] for _, body in receiver.received}
    assert len(receiver.received) == 3 and len(ids) == 1  # one idempotency id for every attempt
    assert WebhookEndpoint.objects.get().failing_since is None
    # /metrics counts each attempt by its outcome.
    assert webhook_attempts("failed") - attempts_before["failed"] == 2
    assert webhook_attempts("delivered") - attempts_before["delivered"] == 1


def webhook_attempts(outcome: str) -> float:
    sample = REGISTRY.get_sample_value(
        "creditdesk_webhook_attempts_total", {"kind": "webhook", "outcome": outcome}
    )
    return sample or 0


@time_machine.travel(utc(2026, 3, 20, 12), tick=False)
def test_an_endpoint_failing_for_a_day_is_disabled_and_the_admins_are_emailed(
    world, endpoint, receiver, run_after_commit, mailoutbox
):
    receiver.status = 500
    run_after_commit(webhooks.send_test_event, endpoint=endpoint[0], now=timezone.now())

    with time_machine.travel(utc(2026, 3, 21, 12), tick=False):
        run_after_commit(queue_due_webhooks)

    endpoint = WebhookEndpoint.objects.get()
    assert not endpoint.enabled and endpoint.disabled_at == utc(2026, 3, 21, 12)
    assert WebhookDelivery.objects.get().status == "failed"  # retried for 24 hours
    (email,) = mailoutbox
    assert email.to == ["alice@acme.example"]
    assert email.subject == "Acme: webhook endpoint Ops disabled"


@time_machine.travel(utc(2026, 3, 20, 12), tick=False)
def test_a_rotated_secret_signs_alongside_the_new_one_for_a_day(
    world, endpoint, receiver, run_after_commit
):
    verify = readme_verify()
    endpoint, old = endpoint
    new = webhooks.rotate_secret(endpoint=endpoint, now=timezone.now())

    run_after_commit(webhooks.send_test_event, endpoint=endpoint, now=timezone.now())
    with time_machine.travel(utc(2026, 3, 21, 13), tick=False):
        run_after_commit(webhooks.send_test_event, endpoint=endpoint, now=timezone.now())
        (during, body_during), (after, body_after) = receiver.received
        assert verify(new, after["Creditdesk-Signature"], body_after)
        assert not verify(old, after["Creditdesk-Signature"], body_after)

    assert new != old
    assert verify(new, during["Creditdesk-Signature"], body_during)
    assert verify(old, during["Creditdesk-Signature"], body_during)


def test_slack_gets_a_block_kit_message(world, receiver, run_after_commit):
    webhooks.create_endpoint(
        subscription=world.subscription, name="#ops", url=receiver.url, kind="slack"
    )
    api_key, _ = factories.api_key(world.subscription, name="Backend")
    client = factories.token_client(world.admin)

    response = run_after_commit(client.post, f"/api/v1/api-keys/{api_key.prefix}/revoke/")

    assert response.status_code == 200
    ((headers, body),) = receiver.received
    assert "Creditdesk-Signature" not in headers  # Slack keeps its secret in the URL
    message = json.loads(body)
    assert message["text"] == (f"Acme: the API key Backend ({api_key.prefix}) was revoked.")
    header, summary, details, context = message["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "Creditdesk: Acme"}}
    assert summary == {"type": "section", "text": {"type": "mrkdwn", "text": message["text"]}}
    assert details["type"] == "section" and details["text"]["type"] == "mrkdwn"
    assert "*api key name:* Backend" in details["text"]["text"]
    assert context["type"] == "context"
    assert context["elements"][0]["text"].startswith("`api_key.revoked` · event ")


def test_a_new_period_is_published(world, endpoint, receiver, run_after_commit):
    period = period_for(subscription=world.subscription, instant=timezone.now())
    alert = ThresholdAlert.objects.create(
        subscription=world.subscription, period=period, threshold="period_opened"
    )

    run_after_commit(send_threshold_alert, alert.pk)

    (event,) = receiver.bodies()
    assert event["type"] == "period.opened"
    assert event["data"]["period"]["start"] == period.start.isoformat()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hooks",
        "http://10.1.2.3/hooks",
        "http://[::1]/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/hooks",
        "ftp://example.com/hooks",
        "https://nonexistent.invalid/hooks",
    ],
)
def test_internal_and_odd_addresses_are_refused(world, url):
    with pytest.raises(webhooks.UnsafeWebhookUrl):
        webhooks.create_endpoint(subscription=world.subscription, name="x", url=url)
    assert not WebhookEndpoint.objects.exists()


def test_the_allow_list_permits_a_loopback_receiver(world, loopback_allowed):
    endpoint, _ = webhooks.create_endpoint(
        subscription=world.subscription, name="Local", url="http://127.0.0.1:8000/hooks"
    )
    assert endpoint.enabled
    with pytest.raises(webhooks.UnsafeWebhookUrl):  # only the networks listed
        webhooks.create_endpoint(subscription=world.subscription, name="x", url="http://10.0.0.1")


def test_secrets_and_urls_are_never_logged(world, endpoint, receiver, run_after_commit, caplog):
    endpoint, secret = endpoint
    with caplog.at_level(logging.DEBUG):
        webhooks.rotate_secret(endpoint=endpoint, now=timezone.now())
        run_after_commit(webhooks.send_test_event, endpoint=endpoint, now=timezone.now())

    assert len(receiver.received) == 1
    endpoint.refresh_from_db()
    for value in (secret, endpoint.secret, receiver.url, "127.0.0.1"):
        assert value not in caplog.text


def test_recording_runs_as_many_statements_with_endpoints_and_rules(
    world, key_client, event_payload, loopback_allowed
):
    key_client.post(EVENTS_URL, event_payload(), format="json")  # opens the period
    with CaptureQueriesContext(connection) as without:
        assert key_client.post(EVENTS_URL, event_payload(), format="json").status_code == 201
    slow, _ = webhooks.create_endpoint(
        subscription=world.subscription, name="Slow", url="http://127.0.0.1:9/never"
    )
    AlertRule.objects.create(
        subscription=world.subscription,
        name="Any",
        target="allocation",
        thresholds=[1],
        webhook=slow,
    )

    with CaptureQueriesContext(connection) as with_endpoint:
        assert key_client.post(EVENTS_URL, event_payload(), format="json").status_code == 201

    assert len(with_endpoint) == len(without)


# --- The admin --------------------------------------------------------------------------------


def test_the_admin_adds_an_endpoint_shows_its_secret_once_and_sends_a_test_event(
    world, client, receiver, run_after_commit
):
    response = post_add_form(
        client,
        world,
        "credits_webhookendpoint",
        name="Ops",
        kind="webhook",
        url=receiver.url,
        enabled="on",
        follow=True,
    )
    endpoint = WebhookEndpoint.objects.get()
    assert f"shown this once: {endpoint.secret}" in response.content.decode()
    assert endpoint.secret not in client.get(admin_url(endpoint, "change")).content.decode()

    run_after_commit(
        client.post,
        reverse("admin:credits_webhookendpoint_changelist"),
        {"action": "send_test_event", "_selected_action": [endpoint.pk]},
    )
    ((headers, body),) = receiver.received
    assert readme_verify()(endpoint.secret, headers["Creditdesk-Signature"], body)
    log = client.get(reverse("admin:credits_webhookdelivery_changelist")).content.decode()
    assert "webhook.test" in log and "200" in log

    delivery = WebhookDelivery.objects.get()
    run_after_commit(
        client.post,
        reverse("admin:credits_webhookdelivery_changelist"),
        {"action": "redeliver", "_selected_action": [delivery.pk]},
    )
    assert len(receiver.received) == 2
    assert receiver.bodies()[0]["id"] == receiver.bodies()[1]["id"]
    delivery.refresh_from_db()
    assert delivery.attempts == 2 and delivery.status == "delivered"


def test_the_admin_refuses_an_internal_url(world, client):
    response = post_add_form(
        client,
        world,
        "credits_webhookendpoint",
        name="x",
        kind="webhook",
        url="http://192.168.1.1/",
    )
    assert response.status_code == 200
    assert "internal address" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_other_subscriptions_and_lower_roles_get_nothing(world, client, loopback_allowed):
    endpoint, _ = webhooks.create_endpoint(
        subscription=world.subscription, name="Ops", url="http://127.0.0.1:9/"
    )
    webhooks.send_test_event(endpoint=endpoint, now=timezone.now())
    delivery = WebhookDelivery.objects.get()

    assert_hidden_from_others(client, world, [endpoint, delivery], "Ops")
