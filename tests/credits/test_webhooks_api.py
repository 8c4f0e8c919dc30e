"""Subscription admins manage webhook and Slack endpoints over the API: the secret shown once
(on creation and rotation), a test event, the delivery log and redelivery."""

import pytest
from rest_framework.test import APIClient

from credits import webhooks
from credits.models import WebhookDelivery, WebhookEndpoint
from tests import factories
from tests.credits.test_webhooks import readme_verify
from tests.factories import frozen_at, token_client, utc

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]
frozen_now = frozen_at(utc(2026, 12, 7, 10))

WEBHOOKS = "/api/v1/webhooks/"


def url(endpoint, action="") -> str:
    return f"{WEBHOOKS}{endpoint.pk}/{action}"


@pytest.fixture
def admin(world):
    return token_client(world.admin)


@pytest.fixture
def endpoint(world, loopback_allowed):
    endpoint, _ = webhooks.create_endpoint(
        subscription=world.subscription, name="Ops", url="http://127.0.0.1:9/hooks"
    )
    return endpoint


def test_an_admin_adds_an_endpoint_and_sees_its_secret_once(
    world, admin, receiver, run_after_commit
):
    created = admin.post(WEBHOOKS, {"name": "Ops", "url": receiver.url}, format="json")

    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert created["Cache-Control"] == "no-store"
    assert (body["kind"], body["enabled"], body["subscription"]) == (
        "webhook",
        True,
        {"id": world.subscription.pk, "name": "Acme"},
    )
    endpoint = WebhookEndpoint.objects.get()
    assert "secret" not in admin.get(url(endpoint)).json()
    assert admin.get(WEBHOOKS).json()["results"] == [admin.get(url(endpoint)).json()]

    tested = run_after_commit(admin.post, url(endpoint, "test/"))

    assert tested.status_code == 202
    ((headers, raw),) = receiver.received
    assert readme_verify()(body["secret"], headers["Creditdesk-Signature"], raw)
    (delivery,) = admin.get(url(endpoint, "deliveries/")).json()["results"]
    assert tested.json() == {"deliveries": [delivery["id"]]}
    assert (delivery["event_type"], delivery["status"], delivery["response_code"]) == (
        "webhook.test",
        "delivered",
        200,
    )
    assert delivery["payload"]["type"] == "webhook.test"


def test_a_slack_endpoint_has_no_secret_to_show_or_rotate(admin, loopback_allowed):
    created = admin.post(
        WEBHOOKS, {"name": "#ops", "kind": "slack", "url": "http://127.0.0.1:9/x"}, format="json"
    )

    assert created.status_code == 201
    assert created.json()["secret"] is None
    rotated = admin.post(f"{WEBHOOKS}{created.json()['id']}/rotate/")
    assert rotated.status_code == 400
    assert rotated.json()["error"]["code"] == "validation_error"


def test_rotating_returns_a_new_secret_and_the_old_one_signs_for_a_grace_period(
    admin, endpoint, receiver, run_after_commit
):
    old = endpoint.secret
    admin.patch(url(endpoint), {"url": receiver.url}, format="json")

    rotated = admin.post(url(endpoint, "rotate/"))

    assert rotated.status_code == 200
    assert rotated["Cache-Control"] == "no-store"
    new = rotated.json()["secret"]
    assert new != old
    assert rotated.json()["previous_secret_expires_at"] == "2026-12-08T10:00:00Z"
    run_after_commit(admin.post, url(endpoint, "test/"))
    ((headers, raw),) = receiver.received
    verify = readme_verify()
    assert verify(new, headers["Creditdesk-Signature"], raw)
    assert verify(old, headers["Creditdesk-Signature"], raw)


def test_updates_check_the_url_refuse_unknown_fields_and_keep_the_kind(admin, endpoint, settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = []

    internal = admin.patch(url(endpoint), {"url": "http://10.0.0.1/hooks"}, format="json")
    unknown = admin.patch(url(endpoint), {"secret": "whsec_mine"}, format="json")
    kind = admin.patch(url(endpoint), {"kind": "slack"}, format="json")
    fixed = admin.patch(url(endpoint), {"failing_since": None}, format="json")

    assert internal.status_code == 400
    assert internal.json()["error"]["code"] == "unsafe_webhook_url"
    assert unknown.status_code == kind.status_code == fixed.status_code == 400
    assert unknown.json()["error"]["details"] == {"secret": ["Unknown field."]}
    assert fixed.json()["error"]["details"] == {
        "failing_since": ["This field cannot be changed over the API."]
    }
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.kind) == ("http://127.0.0.1:9/hooks", "webhook")
    created = admin.post(WEBHOOKS, {"name": "x", "url": "ftp://example.com/"}, format="json")
    assert created.status_code == 400


def test_enabling_a_disabled_endpoint_forgets_its_failures(admin, endpoint):
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False, failing_since=utc(2026, 12, 5), disabled_at=utc(2026, 12, 6)
    )
    assert admin.post(url(endpoint, "test/")).status_code == 400  # disabled: nothing to send

    enabled = admin.put(
        url(endpoint),
        {"name": "Ops 2", "url": "http://127.0.0.1:9/hooks", "enabled": True},
        format="json",
    )

    assert enabled.status_code == 200
    assert (enabled.json()["name"], enabled.json()["enabled"]) == ("Ops 2", True)
    assert enabled.json()["failing_since"] is enabled.json()["disabled_at"] is None


def test_redelivering_sends_the_same_event_again(
    admin, endpoint, receiver, run_after_commit, django_assert_max_num_queries
):
    admin.patch(url(endpoint), {"url": receiver.url}, format="json")
    run_after_commit(admin.post, url(endpoint, "test/"))
    run_after_commit(admin.post, url(endpoint, "test/"))
    delivery = WebhookDelivery.objects.first()

    redelivered = run_after_commit(
        admin.post, url(endpoint, f"deliveries/{delivery.pk}/redeliver/")
    )

    assert redelivered.status_code == 202
    assert [body["id"] for body in receiver.bodies()][-1] == str(delivery.event_id)
    with django_assert_max_num_queries(8):
        page = admin.get(url(endpoint, "deliveries/")).json()
    assert page["count"] == 2


def test_deleting_an_endpoint_removes_its_log(admin, endpoint):
    admin.post(url(endpoint, "test/"))

    assert admin.delete(url(endpoint)).status_code == 204
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookDelivery.objects.exists()


# --- Who may --------------------------------------------------------------------------------


def test_another_subscriptions_admin_gets_404(world, endpoint):
    outsider = token_client(world.outsider)
    delivery = webhooks.send_test_event(endpoint=endpoint, now=utc(2026, 12, 7, 10))[0]

    assert outsider.get(WEBHOOKS).json()["count"] == 0
    assert outsider.get(f"{WEBHOOKS}?subscription={world.subscription.pk}").status_code == 404
    for method, path in [
        ("get", url(endpoint)),
        ("patch", url(endpoint)),
        ("delete", url(endpoint)),
        ("post", url(endpoint, "rotate/")),
        ("post", url(endpoint, "test/")),
        ("get", url(endpoint, "deliveries/")),
        ("post", url(endpoint, f"deliveries/{delivery}/redeliver/")),
    ]:
        assert getattr(outsider, method)(path, {"name": "x"}, format="json").status_code == 404
    endpoint.refresh_from_db()
    assert endpoint.name == "Ops" and WebhookDelivery.objects.count() == 1


@pytest.mark.parametrize("persona", ["manager", "member", "api key"])
def test_lower_roles_and_api_keys_are_forbidden(world, endpoint, persona):
    if persona == "api key":
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {factories.api_key(world.subscription)[1]}")
    else:
        client = token_client(getattr(world, persona))

    assert client.get(WEBHOOKS).status_code == 403
    assert client.post(WEBHOOKS, {"name": "x", "url": "https://example.com"}).status_code == 403
    assert client.get(url(endpoint)).status_code == 403
    assert client.post(url(endpoint, "rotate/")).status_code == 403
    assert client.get(url(endpoint, "deliveries/")).status_code == 403
    assert WebhookEndpoint.objects.count() == 1
