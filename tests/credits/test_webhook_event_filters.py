"""An endpoint subscribes to some event types only (none chosen: all), set in the admin or the
API; deliveries respect the choice, and the test event goes whatever it is."""

import pytest
import time_machine

from credits.models import WebhookDelivery, WebhookEndpoint
from credits.tasks import evaluate_alert_rules
from tests import factories
from tests.admin_pages import admin_url, post_add_form
from tests.credits.conftest import set_allocation
from tests.factories import AlertRuleFactory, token_client, utc

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

EVENTS_URL = "/api/v1/events/"
WEBHOOKS = "/api/v1/webhooks/"


@time_machine.travel(utc(2026, 12, 7, 10), tick=False)
def test_an_endpoint_gets_only_the_events_it_chose(
    world, key_client, event_payload, receivers, run_after_commit
):
    """Over the API: one endpoint takes only ``limit.reached``, another everything."""
    limits_only, everything = receivers(), receivers()
    admin = token_client(world.admin)
    created = admin.post(
        WEBHOOKS,
        {"name": "Limits", "url": limits_only.url, "event_types": ["limit.reached"]},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["event_types"] == ["limit.reached"]
    admin.post(WEBHOOKS, {"name": "All", "url": everything.url}, format="json")
    set_allocation(world.subscription, "10")
    limits = WebhookEndpoint.objects.get(name="Limits")
    AlertRuleFactory(subscription=world.subscription, email_admins=False, webhook=limits)

    run_after_commit(key_client.post, EVENTS_URL, event_payload(credits="8.5"), format="json")
    run_after_commit(evaluate_alert_rules)  # the rule's 50%: threshold.crossed, not chosen
    run_after_commit(key_client.post, EVENTS_URL, event_payload(credits="5"), format="json")

    assert [event["type"] for event in limits_only.bodies()] == ["limit.reached"]
    assert [event["type"] for event in everything.bodies()] == [
        "threshold.crossed",
        "limit.reached",
    ]
    endpoint = WebhookEndpoint.objects.get(name="Limits")
    tested = run_after_commit(admin.post, f"{WEBHOOKS}{endpoint.pk}/test/")
    assert tested.status_code == 202
    assert limits_only.bodies()[-1]["type"] == "webhook.test"


def test_the_choice_changes_over_the_api_and_bad_types_are_refused(world, loopback_allowed):
    admin = token_client(world.admin)
    created = admin.post(
        WEBHOOKS, {"name": "Ops", "url": "http://127.0.0.1:9/hooks"}, format="json"
    ).json()
    assert created["event_types"] == []
    path = f"{WEBHOOKS}{created['id']}/"

    changed = admin.patch(
        path,
        {"event_types": ["api_key.revoked", "statement.closed", "api_key.revoked"]},
        format="json",
    )
    assert changed.status_code == 200
    assert changed.json()["event_types"] == ["statement.closed", "api_key.revoked"]

    refused = admin.patch(path, {"event_types": ["webhook.test", "nope"]}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "validation_error"
    assert "event_types" in refused.json()["error"]["details"]
    assert admin.patch(path, {"event_types": "limit.reached"}, format="json").status_code == 400
    assert admin.get(path).json()["event_types"] == ["statement.closed", "api_key.revoked"]


def test_the_admin_sets_the_events_and_a_revoked_key_goes_only_where_chosen(
    world, client, receivers, run_after_commit
):
    revocations, limits = receivers(), receivers()
    for name, receiver, chosen in (
        ("Keys", revocations, "api_key.revoked"),
        ("Limits", limits, "limit.reached"),
    ):
        response = post_add_form(
            client,
            world,
            "credits_webhookendpoint",
            name=name,
            kind="webhook",
            url=receiver.url,
            event_types=[chosen],
            enabled="on",
        )
        assert response.status_code == 302, response.content.decode()[-2000:]
    endpoint = WebhookEndpoint.objects.get(name="Keys")
    assert endpoint.event_types == ["api_key.revoked"]
    page = client.get(admin_url(endpoint, "change")).content.decode()
    assert 'value="statement.closed"' in page

    key, _ = factories.api_key(world.subscription)
    revoked = run_after_commit(
        token_client(world.admin).post, f"/api/v1/api-keys/{key.prefix}/revoke/"
    )
    assert revoked.status_code == 200, revoked.content

    assert [event["type"] for event in revocations.bodies()] == ["api_key.revoked"]
    assert limits.bodies() == []
    assert WebhookDelivery.objects.count() == 1

    refused = client.post(
        admin_url(endpoint, "change"),
        {"name": "Keys", "url": endpoint.url, "event_types": ["nope"], "enabled": "on"},
    )
    assert refused.status_code == 200  # the form again, with the error
    endpoint.refresh_from_db()
    assert endpoint.event_types == ["api_key.revoked"]
