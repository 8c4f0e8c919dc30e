"""``GET /metrics``: what Prometheus reads, parsed by prometheus_client's own parser, and who
may read it. Counters are shared by the whole test process, so each test compares a scrape
after with a scrape before."""

import ipaddress
import smtplib
from datetime import timedelta
from unittest import mock

import pytest
from django.core.mail.backends.locmem import EmailBackend
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django_celery_beat.models import PeriodicTask
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from config.celery import app
from credits.models import ThresholdAlert
from credits.tasks import open_billing_periods, send_threshold_alert
from tests import factories
from tests.credits.test_tasks_alerts import crossed
from tests.factories import frozen_at, utc

NOW = utc(2026, 11, 23, 10)
TOKEN = "scrape-token-for-tests"
LOCAL_EMAIL = "django.core.mail.backends.locmem.EmailBackend"

frozen_now = frozen_at(NOW)


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []


def scrape(**headers) -> dict[tuple, float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    response = APIClient().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def moved(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


@pytest.mark.django_db
@pytest.mark.usefixtures("metrics_token")
def test_recorded_and_refused_events_move_the_counters(world, product):
    _, secret = factories.api_key(world.subscription)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    event = {"environment": str(world.environment.public_id), "product": "ai-agent"}

    def post(key, credits):
        body = {**event, "idempotency_key": key, "credits": credits}
        return client.post("/api/v1/events/", body, format="json").status_code

    before = scrape()
    assert [post("a", "2"), post("a", "2"), post("a", "3"), post("b", "x")] == [201, 200, 409, 400]
    batch = [
        {**event, "idempotency_key": "c", "credits": "1"},
        {**event, "idempotency_key": "d", "credits": "1", "product": "not-enabled"},
        {**event, "idempotency_key": "e", "credits": "-1"},
    ]
    response = client.post("/api/v1/events/batch/", {"events": batch}, format="json")
    assert response.json()["accepted"] == 1
    after = scrape()

    assert moved(before, after, "creditdesk_events_recorded_total") == 2
    assert moved(before, after, "creditdesk_events_replayed_total") == 1
    refused = "creditdesk_events_refused_total"
    assert moved(before, after, refused, code="idempotency_conflict") == 1
    assert moved(before, after, refused, code="validation_error") == 2
    assert moved(before, after, refused, code="product_not_enabled") == 1
    histogram = "creditdesk_recording_seconds_count"
    assert moved(before, after, histogram, request="event") == 3  # the 400 never reached it
    assert moved(before, after, histogram, request="batch") == 1
    assert after[("creditdesk_recording_seconds_bucket", (("le", "+Inf"), ("request", "batch")))]


@pytest.mark.django_db
@pytest.mark.usefixtures("metrics_token")
def test_gauges_read_at_scrape_time(world):
    crossed(world, ThresholdAlert.Threshold.ALLOCATION_80)
    call_command("setup_periodic_tasks")
    PeriodicTask.objects.filter(task=open_billing_periods.name).update(
        last_run_at=NOW - timedelta(minutes=15)
    )

    samples = scrape()

    assert samples[("creditdesk_celery_broker_reachable", ())] == 1
    for queue in ("alerts", "default", "reports"):  # the test run's own, empty queues
        assert samples[("creditdesk_celery_queue_length", (("queue", queue),))] == 0
    assert samples[("creditdesk_alerts_unsent", ())] == 1
    assert samples[("creditdesk_alerts_oldest_unsent_age_seconds", ())] == 0  # frozen clock
    last_run = (("task", open_billing_periods.name),)
    assert samples[("creditdesk_periodic_task_last_run_age_seconds", last_run)] == 900


@pytest.mark.django_db
@pytest.mark.usefixtures("metrics_token")
def test_an_unreachable_broker_is_a_gauge_not_an_error(monkeypatch):
    connect = app.connection_for_read
    monkeypatch.setattr(app, "connection_for_read", lambda: connect(url="redis://127.0.0.1:1/0"))

    samples = scrape()

    assert samples[("creditdesk_celery_broker_reachable", ())] == 0
    assert not [name for name, _ in samples if name == "creditdesk_celery_queue_length"]


@pytest.mark.django_db
@pytest.mark.usefixtures("metrics_token", "eager_celery")
def test_alert_emails_and_task_retries_are_counted(world, mailoutbox, settings):
    settings.EMAIL_BACKEND = "core.mail.CountingEmailBackend"  # as configured, not pytest's
    settings.EMAIL_DELIVERY_BACKEND = LOCAL_EMAIL
    settings.CELERY_TASK_EAGER_PROPAGATES = False  # retries run in line, as a worker's would
    alert = crossed(world, ThresholdAlert.Threshold.ALLOCATION_80)
    send, attempts = EmailBackend.send_messages, []

    def fails_twice(backend, messages):
        attempts.append(1)
        if len(attempts) < 3:
            raise smtplib.SMTPServerDisconnected("try again")
        return send(backend, messages)

    before = scrape()
    with mock.patch.object(EmailBackend, "send_messages", fails_twice):
        assert send_threshold_alert.apply(args=[alert.pk]).successful()
    after = scrape()

    assert len(mailoutbox) == 1
    assert moved(before, after, "creditdesk_emails_sent_total") == 1
    assert moved(before, after, "creditdesk_emails_failed_total") == 2
    assert moved(before, after, "creditdesk_alerts_sent_total", channel="email") == 1
    assert moved(before, after, "creditdesk_alerts_failed_total", channel="email") == 2
    task = send_threshold_alert.name
    assert moved(before, after, "creditdesk_celery_task_retries_total", task=task) == 2
    assert moved(before, after, "creditdesk_celery_task_failures_total", task=task) == 0


@pytest.mark.django_db
@pytest.mark.usefixtures("metrics_token", "eager_celery")
def test_a_task_that_gives_up_is_a_failure(world, settings):
    settings.CELERY_TASK_EAGER_PROPAGATES = False
    alert = crossed(world, ThresholdAlert.Threshold.ALLOCATION_80)
    refused = smtplib.SMTPServerDisconnected("down")
    before = scrape()
    with mock.patch.object(EmailBackend, "send_messages", side_effect=refused):
        assert send_threshold_alert.apply(args=[alert.pk]).failed()
    after = scrape()

    task = send_threshold_alert.name
    assert moved(before, after, "creditdesk_celery_task_failures_total", task=task) == 1
    retries = send_threshold_alert.max_retries
    assert moved(before, after, "creditdesk_celery_task_retries_total", task=task) == retries


# --- Who may scrape ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Token {TOKEN}", f"Bearer {TOKEN}x"]
)
@pytest.mark.usefixtures("metrics_token")
def test_without_the_token_the_answer_is_401(authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}

    response = APIClient().get("/metrics", **headers)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert response.json()["error"]["code"] == "not_authenticated"
    assert b"creditdesk_" not in response.content


@pytest.mark.django_db
def test_an_allowed_network_needs_no_token(settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", _networks("10.1.0.0/16")

    inside = APIClient().get("/metrics", REMOTE_ADDR="10.1.2.3")
    outside = APIClient().get("/metrics", REMOTE_ADDR="10.2.0.1")
    # With NUM_PROXIES=0 a client's X-Forwarded-For is not believed.
    spoofed = APIClient().get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="10.1.2.3")

    assert inside.status_code == 200
    assert b"creditdesk_events_recorded_total" in inside.content
    assert (outside.status_code, spoofed.status_code) == (403, 403)
    assert outside.json()["error"]["code"] == "permission_denied"


def test_with_neither_token_nor_network_nobody_may_scrape(settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []

    assert APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_production_without_metrics_access_warns_at_check_deploy(settings):
    settings.DEBUG, settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = False, "", []
    with pytest.raises(SystemCheckError, match=r"core\.W001"):
        call_command("check", "--deploy", "--fail-level", "WARNING", "--tag", "security")

    settings.METRICS_TOKEN = TOKEN
    try:
        call_command("check", "--deploy", "--fail-level", "WARNING", "--tag", "security")
        reported = ""
    except SystemCheckError as other_warnings:  # the test settings' own (plain HTTP)
        reported = str(other_warnings)
    assert "core.W001" not in reported


def _networks(*cidrs):
    return [ipaddress.ip_network(cidr) for cidr in cidrs]


def test_a_missing_metrics_directory_stops_start_up(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))

    with pytest.raises(SystemCheckError, match=r"core\.E001"):
        call_command("check")
