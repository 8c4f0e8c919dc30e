"""Webhooks: events posted to a subscription's endpoints, signed, at least once.

Publishing an event writes one ``WebhookDelivery`` row per enabled endpoint, in the caller's
transaction, and queues its first attempt after commit: recording never waits for a receiver,
and a rolled-back change owes nothing. The event's id is derived from what caused it (an
alert's row, a key's revocation), and a delivery is unique per (endpoint, event id), so a task
that runs twice publishes once.

An attempt claims its delivery with a conditional update that pushes ``next_attempt_at`` past
the request's timeout (the healthchecks way: no lock is held while a receiver answers), posts,
and writes the outcome. A failure is tried again with exponential backoff, 30 s doubling to an
hour, for ``WEBHOOK_RETRY_HOURS`` after the event; the sweep (``queue_due_deliveries``) queues
the due retries and anything the broker lost. An endpoint whose every attempt has failed for
``WEBHOOK_DISABLE_AFTER_HOURS`` is disabled and its subscription's admins are emailed.

Signed webhooks carry ``Creditdesk-Signature: t=<unix time>,v1=<hex>``, the HMAC-SHA256 of
``"<t>.<body>"`` with the endpoint's secret (the README shows how to check it); during a
rotation's grace period a second ``v1`` is signed with the previous secret. Slack endpoints get
a Block Kit message instead, unsigned (Slack's incoming webhooks hold their secret in the URL).
Secrets and URLs (a Slack URL is a secret) are never logged.
"""

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from accounts.models import Subscription
from core import metrics
from core.errors import DomainError

from .models import WebhookDelivery, WebhookEndpoint
from .recipients import admin_emails

logger = logging.getLogger(__name__)

EVENT_TYPES = (
    "threshold.crossed",
    "limit.reached",
    "period.opened",
    "statement.closed",
    "api_key.revoked",
)
TEST_EVENT = "webhook.test"
EVENT_NAMESPACE = uuid.UUID("8a0f7a52-4d1e-4a55-9f51-0c9e3c2b7d11")
FIRST_RETRY = timedelta(seconds=30)
LONGEST_WAIT = timedelta(hours=1)
USER_AGENT = "Creditdesk-Webhooks/1"


class UnsafeWebhookUrl(DomainError):
    code = "unsafe_webhook_url"
    message = "Webhook URLs must be http(s) addresses on the public internet."


# --- Endpoints and their secrets ----------------------------------------------------------


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``WEBHOOK_ALLOWED_NETWORKS``, checked when the settings load."""
    return [ipaddress.ip_network(value) for value in settings.WEBHOOK_ALLOWED_NETWORKS]


def check_url(url: str) -> None:
    """Refuse an address that is not http(s), or whose host resolves to an internal address
    (private, loopback, link-local, reserved ...) outside ``WEBHOOK_ALLOWED_NETWORKS``.

    Checked when an endpoint is saved and again before each attempt, since DNS can change.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeWebhookUrl()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port)}
    except (OSError, ValueError, UnicodeError):
        raise UnsafeWebhookUrl("The webhook's host name does not resolve.") from None
    allowed = allowed_networks()
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global and not any(ip in network for network in allowed):
            raise UnsafeWebhookUrl(
                "The webhook's host is an internal address; WEBHOOK_ALLOWED_NETWORKS can permit it."
            )


@transaction.atomic
def create_endpoint(
    *, subscription: Subscription, name: str, url: str, kind: str = WebhookEndpoint.Kind.WEBHOOK
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret, which the caller shows once."""
    check_url(url)
    endpoint = WebhookEndpoint.objects.create(
        subscription=subscription, name=name, url=url, kind=kind, secret=new_secret()
    )
    return endpoint, endpoint.secret


@transaction.atomic
def update_endpoint(
    *, endpoint: WebhookEndpoint, name: str | None = None, url: str | None = None, enabled=None
) -> WebhookEndpoint:
    """Rename, move or pause an endpoint; a new URL is checked as on creation, and enabling it
    again forgets its failures, so it is not disabled again at its next failed attempt."""
    if url is not None and url != endpoint.url:
        check_url(url)
        endpoint.url = url
    if name is not None:
        endpoint.name = name
    if enabled is not None:
        if enabled and not endpoint.enabled:
            endpoint.failing_since = endpoint.disabled_at = None
        endpoint.enabled = enabled
    endpoint.save()
    return endpoint


@transaction.atomic
def rotate_secret(*, endpoint: WebhookEndpoint, now: datetime) -> str:
    """A new secret, returned to be shown once; the old one keeps signing for
    ``WEBHOOK_SECRET_GRACE_HOURS`` so receivers can switch without dropping a delivery."""
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + timedelta(hours=settings.WEBHOOK_SECRET_GRACE_HOURS)
    endpoint.secret = new_secret()
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    logger.info("event=webhook_secret_rotated endpoint_id=%s", endpoint.pk)
    return endpoint.secret


def delete_endpoint(*, endpoint: WebhookEndpoint) -> None:
    """The endpoint and its delivery log; rules that used it keep their other channels."""
    logger.info("event=webhook_endpoint_deleted endpoint_id=%s", endpoint.pk)
    endpoint.delete()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(endpoint: WebhookEndpoint, timestamp: int, body: bytes, now) -> str:
    signatures = [sign(endpoint.secret, timestamp, body)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires and now < expires:
        signatures.append(sign(endpoint.previous_secret, timestamp, body))
    return ",".join([f"t={timestamp}", *(f"v1={signature}" for signature in signatures)])


# --- Publishing ---------------------------------------------------------------------------


def event_id(cause: str) -> uuid.UUID:
    """The same id for the same cause (``threshold_alert:42``), however often it is
    published."""
    return uuid.uuid5(EVENT_NAMESPACE, cause)


def publish(
    *,
    subscription: Subscription,
    event_type: str,
    cause: str,
    summary: str,
    data: dict,
    now: datetime,
    endpoints=None,
) -> list[int]:
    """Owe the event to each enabled endpoint (``endpoints``, or all of the subscription's);
    the first attempts are queued after the caller's transaction commits."""
    identifier = event_id(cause)
    payload = {
        "id": str(identifier),
        "type": event_type,
        "created": now.isoformat(),
        "subscription": {"id": subscription.pk, "name": subscription.name},
        "summary": summary,
        "data": data,
    }
    if endpoints is None:
        endpoints = subscription.webhook_endpoints.all()
    rows = [
        WebhookDelivery(
            subscription=subscription,
            endpoint=endpoint,
            event_id=identifier,
            event_type=event_type,
            payload=payload,
            created_at=now,
            next_attempt_at=now,
        )
        for endpoint in endpoints
        if endpoint.enabled and endpoint.subscription_id == subscription.pk
    ]
    # ignore_conflicts leaves the new rows' ids unknown: read back what this event owes.
    WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=True)
    ids = (
        list(
            WebhookDelivery.objects.filter(
                event_id=identifier,
                endpoint__in=[row.endpoint_id for row in rows],
                status=WebhookDelivery.Status.PENDING,
                attempts=0,
            ).values_list("pk", flat=True)
        )
        if rows
        else []
    )
    if ids:
        transaction.on_commit(lambda: queue_deliveries(ids))
    return ids


@shared_task
def deliver_webhook(delivery_id: int) -> bool:
    """One attempt at a delivery (the task lives here, beside what queues it, so that
    ``credits.tasks`` can import this module without a cycle)."""
    return attempt_delivery(delivery_id=delivery_id, now=timezone.now())


def queue_deliveries(delivery_ids: list[int]) -> None:
    """One task per delivery, so that a slow receiver delays only its own; a broker outage
    is left to the sweep."""
    for delivery_id in delivery_ids:
        try:
            deliver_webhook.delay(delivery_id)
        except Exception:
            logger.exception("event=webhook_not_queued delivery_id=%s", delivery_id)
            return


def send_test_event(*, endpoint: WebhookEndpoint, now: datetime) -> list[int]:
    """A ``webhook.test`` event to this endpoint alone, whatever its state."""
    return publish(
        subscription=endpoint.subscription,
        event_type=TEST_EVENT,
        cause=f"test:{endpoint.pk}:{uuid.uuid4()}",
        summary=f"A test event from Creditdesk to {endpoint.name}.",
        data={},
        now=now,
        endpoints=[endpoint] if endpoint.enabled else [],
    )


def redeliver(*, deliveries, now: datetime) -> list[int]:
    """Attempt these deliveries again now (delivered or not), with a fresh 24 hours."""
    ids = list(deliveries.values_list("pk", flat=True))
    WebhookDelivery.objects.filter(pk__in=ids).update(
        status=WebhookDelivery.Status.PENDING, created_at=now, next_attempt_at=now
    )
    transaction.on_commit(lambda: queue_deliveries(ids))
    return ids


# --- Delivering ---------------------------------------------------------------------------


def _body(delivery: WebhookDelivery) -> bytes:
    if delivery.endpoint.kind == WebhookEndpoint.Kind.SLACK:
        return json.dumps(slack_message(delivery.payload)).encode()
    return json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()


def slack_message(payload: dict) -> dict:
    """The event as a Slack Block Kit message, with ``text`` for notifications."""
    subscription = payload["subscription"]["name"]
    details = [f"*{key.replace('_', ' ')}:* {value}" for key, value in _flat(payload["data"])]
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Creditdesk: {subscription}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": payload["summary"]}},
    ]
    if details:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(details)}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"`{payload['type']}` · event {payload['id']}"}
            ],
        }
    )
    return {"text": payload["summary"], "blocks": blocks}


def _flat(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key} ")
        else:
            yield f"{prefix}{key}", value


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead to an internal address: it counts as a failed attempt."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def _post(delivery: WebhookDelivery, now: datetime) -> tuple[int | None, str]:
    """Post the delivery; its response code (None: no answer) and what went wrong."""
    endpoint = delivery.endpoint
    body = _body(delivery)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if endpoint.kind == WebhookEndpoint.Kind.WEBHOOK:
        timestamp = int(now.timestamp())
        headers["Creditdesk-Event-Id"] = str(delivery.event_id)
        headers["Creditdesk-Event-Type"] = delivery.event_type
        headers["Creditdesk-Signature"] = signature_header(endpoint, timestamp, body, now)
    try:
        check_url(endpoint.url)
        request = urllib.request.Request(endpoint.url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) only, checked above
        with _OPENER.open(request, timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as response:
            return response.status, ""
    except UnsafeWebhookUrl as refusal:
        return None, refusal.message
    except urllib.error.HTTPError as error:
        return error.code, f"HTTP {error.code}"
    except (OSError, ValueError) as error:  # refused, timed out, TLS, a malformed answer
        return None, type(error).__name__


def attempt_delivery(*, delivery_id: int, now: datetime) -> bool:
    """Post a due delivery once; True if the receiver took it (2xx). Safe to run twice: the
    claim lets one attempt through per due time."""
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 30)
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id,
        status=WebhookDelivery.Status.PENDING,
        next_attempt_at__lte=now,
        endpoint__enabled=True,
    ).update(next_attempt_at=lease)
    if claimed != 1:
        return False
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    code, error = _post(delivery, now)
    delivered = code is not None and 200 <= code < 300
    _record_outcome(delivery, code=code, error=error, delivered=delivered, now=now)
    metrics.WEBHOOK_ATTEMPTS.labels(
        kind=delivery.endpoint.kind, outcome="delivered" if delivered else "failed"
    ).inc()
    logger.info(
        "event=webhook_attempt delivery_id=%s endpoint_id=%s type=%s attempt=%s code=%s ok=%s",
        delivery.pk,
        delivery.endpoint_id,
        delivery.event_type,
        delivery.attempts + 1,
        code,
        delivered,
    )
    return delivered


def retry_delay(attempts: int) -> timedelta:
    """30 s after the first failure, doubling to an hour."""
    return min(FIRST_RETRY * 2 ** (attempts - 1), LONGEST_WAIT)


@transaction.atomic
def _record_outcome(delivery, *, code, error, delivered, now) -> None:
    attempts = delivery.attempts + 1
    changes = {
        "attempts": attempts,
        "response_code": code,
        "error": error[:300],
        "last_attempt_at": now,
    }
    endpoint = WebhookEndpoint.objects.filter(pk=delivery.endpoint_id)
    if delivered:
        changes |= {"status": WebhookDelivery.Status.DELIVERED, "delivered_at": now}
        endpoint.exclude(failing_since=None).update(failing_since=None)
    else:
        gave_up = now - delivery.created_at >= timedelta(hours=settings.WEBHOOK_RETRY_HOURS)
        changes |= (
            {"status": WebhookDelivery.Status.FAILED}
            if gave_up
            else {"next_attempt_at": now + retry_delay(attempts)}
        )
        endpoint.filter(failing_since=None).update(failing_since=now)
        _disable_if_failing_too_long(delivery.endpoint_id, now)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**changes)


def _disable_if_failing_too_long(endpoint_id: int, now: datetime) -> None:
    since = now - timedelta(hours=settings.WEBHOOK_DISABLE_AFTER_HOURS)
    disabled = WebhookEndpoint.objects.filter(
        pk=endpoint_id, enabled=True, failing_since__lte=since
    ).update(enabled=False, disabled_at=now)
    if disabled == 1:
        logger.warning("event=webhook_endpoint_disabled endpoint_id=%s", endpoint_id)
        transaction.on_commit(lambda: _email_disabled(endpoint_id))


def _email_disabled(endpoint_id: int) -> None:
    endpoint = WebhookEndpoint.objects.select_related("subscription").get(pk=endpoint_id)
    recipients = admin_emails(endpoint.subscription)
    if not recipients:
        return
    hours = settings.WEBHOOK_DISABLE_AFTER_HOURS
    try:
        send_mail(
            subject=f"{endpoint.subscription.name}: webhook endpoint {endpoint.name} disabled",
            message=(
                f"Every delivery to the endpoint {endpoint.name} has failed for {hours} hours, "
                "so Creditdesk stopped sending to it. Its deliveries are in the admin's "
                "webhook delivery log. Fix the receiver, enable the endpoint again and "
                "redeliver what it missed.\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=recipients,
        )
    except OSError:
        logger.exception("event=webhook_disabled_email_failed endpoint_id=%s", endpoint_id)


def queue_due_deliveries(*, now: datetime, limit: int = 1000) -> int:
    """Queue the deliveries due for an attempt (retries, and first attempts the broker lost);
    return how many."""
    due = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING,
            next_attempt_at__lte=now,
            endpoint__enabled=True,
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    queue_deliveries(due)
    return len(due)


def publish_api_key_revoked(*, api_key, now: datetime, **kwargs) -> None:
    """``accounts.signals.api_key_revoked``: tell the key's subscription's endpoints."""
    subscription = api_key.subscription
    publish(
        subscription=subscription,
        event_type="api_key.revoked",
        cause=f"api_key_revoked:{api_key.pk}",
        summary=f"{subscription.name}: the API key {api_key.name} ({api_key.prefix}) was revoked.",
        data={
            "api_key": {"prefix": api_key.prefix, "name": api_key.name},
            "revoked_at": now.isoformat(),
        },
        now=now,
    )
