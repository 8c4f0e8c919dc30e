"""The demo's alert rule (Acme Corp's Content team at 50% of its limit) fires once, by email, to
a signed webhook on this machine (checked with nothing but the README's instructions) and to a
Slack-shaped receiver, under the demo's own settings."""

import json
import os
import subprocess
import sys
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.conf import settings as django_settings
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.models import Environment, Team
from credits import webhooks
from credits.management.demo_world import DEMO_KEY_NAME, demo_key_secret
from credits.models import AlertRule, TeamPeriodUsage, WebhookDelivery
from credits.tasks import evaluate_alert_rules, queue_due_webhooks
from tests.credits.receivers import Receiver
from tests.credits.test_webhooks import readme_verify
from tests.factories import utc

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def demo_webhook_networks() -> list[str]:
    """``WEBHOOK_ALLOWED_NETWORKS`` as ``bin/demo`` (``DEBUG=true``, nothing else) loads it."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DEBUG", "WEBHOOK_", "SECRET_KEY"))
    }
    code = (
        "import json; from config import settings; "
        "print(json.dumps([str(network) for network in settings.WEBHOOK_ALLOWED_NETWORKS]))"
    )
    result = subprocess.run(  # noqa: S603 - our own settings module with our own interpreter
        [sys.executable, "-c", code],
        env={**environment, "DEBUG": "true"},
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.fixture
def demo_receivers(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = demo_webhook_networks()
    made = Receiver(), Receiver()
    yield made
    for receiver in made:
        receiver.close()


@time_machine.travel(utc(2026, 12, 2, 9), tick=False)
def test_the_demo_rule_fires_once_to_email_webhook_and_slack(
    demo_receivers, run_after_commit, mailoutbox
):
    call_command("seed_demo", "--months", "1", "--scale", "0.05", stdout=StringIO())
    receiver, slack = demo_receivers
    rule = AlertRule.objects.get(subscription__name="Acme Corp", name="Content at half its limit")
    rule.webhook, secret = webhooks.create_endpoint(
        subscription=rule.subscription, name="Local receiver", url=receiver.url
    )
    rule.slack, _ = webhooks.create_endpoint(
        subscription=rule.subscription, name="#content", url=slack.url, kind="slack"
    )
    rule.save()
    assert run_after_commit(evaluate_alert_rules) == 0  # the seed leaves the team below half

    content = Team.objects.get(subscription__name="Acme Corp", name="Content")
    now = utc(2026, 12, 2, 9)
    used = TeamPeriodUsage.objects.get(
        team=content, period__start__lte=now, period__end__gt=now
    ).credits_used
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {demo_key_secret('Acme Corp', DEMO_KEY_NAME)}")
    website = Environment.objects.get(
        project__subscription__name="Acme Corp", project__name="Website", name="Production"
    )
    response = client.post(
        "/api/v1/events/",
        {
            "idempotency_key": "demo-alert-1",
            "environment": str(website.public_id),
            "user": "carol@acme.example",
            "product": "ai-agent",
            "credits": str(Decimal(15_000) - used),  # half of the team's 30,000
        },
        format="json",
    )
    assert response.status_code == 201, response.content

    assert run_after_commit(evaluate_alert_rules) == 1
    assert run_after_commit(evaluate_alert_rules) == 0
    assert run_after_commit(queue_due_webhooks) == 0  # delivered at once: no retry owed

    (email,) = mailoutbox
    assert email.to == ["alice@acme.example"]
    assert email.subject == "Acme Corp: Content at half its limit"
    summary = (
        "Acme Corp: team Content used 50% of its limit for December 2026 (15000 of 30000 credits)."
    )
    assert summary in email.body
    ((headers, body),) = receiver.received
    assert readme_verify()(secret, headers["Creditdesk-Signature"], body)
    event = json.loads(body)
    assert (event["type"], event["summary"]) == ("threshold.crossed", summary)
    assert event["data"]["target"] == {"type": "team", "id": content.pk, "name": "Content"}
    (message,) = slack.bodies()
    assert message["text"] == summary
    assert message["blocks"][0]["text"]["text"] == "Creditdesk: Acme Corp"
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"delivered"}
