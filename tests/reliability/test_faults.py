"""Safe failure: the broker down, SMTP failing, the database connection dropped mid-request, a
worker killed mid-task, and many processes charging one subscription at once.

What must hold each time: a charge is all or nothing (counters, ledger row, rollup and
idempotency record together), an email owed is sent exactly once when the fault clears, and
a client can always retry with the same idempotency key.
"""

import json
import os
import random
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from smtplib import SMTPServerDisconnected

import psycopg
import pytest
import time_machine
from django.conf import settings
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend
from django.db import OperationalError, connection
from django.db.models import Sum
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Role, Subscription
from config.celery import app
from core.retry import EMAIL_RETRY
from credits import notifications, recording, tasks
from credits.billing import period_for
from credits.models import (
    BillingPeriod,
    CreditEvent,
    DailyUsage,
    IdempotencyRecord,
    ThresholdAlert,
)
from tests import factories
from tests.conftest import PIN_CLOCK_VARIABLE
from tests.database_url import child_database_url

CLOSED_PORT_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused


@pytest.fixture
def acme(world):
    product = factories.ProductFactory(slug="ai-agent", name="AI agent")
    product.enabled_for.add(world.subscription)
    world.subscription.base_allocation = Decimal("10")
    world.subscription.save()
    return world


@pytest.fixture
def key_client(acme):
    _, secret = factories.api_key(acme.subscription)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return client


def event(world, key: str, credits: str = "3") -> dict:
    return {
        "idempotency_key": key,
        "environment": str(world.environment.public_id),
        "user": world.member.email,
        "product": "ai-agent",
        "credits": credits,
    }


def ledger_state(subscription) -> dict:
    return {
        "events": CreditEvent.objects.filter(subscription=subscription).count(),
        "used": list(
            BillingPeriod.objects.filter(subscription=subscription).values_list(
                "credits_used", flat=True
            )
        ),
        "rollups": DailyUsage.objects.filter(subscription=subscription).aggregate(
            total=Sum("credits")
        )["total"],
        "idempotency": IdempotencyRecord.objects.filter(subscription=subscription).count(),
    }


def months_since(subscription, instant) -> int:
    """How many billing periods from the month of ``instant`` through this one."""
    then, now = instant.astimezone(subscription.zone), timezone.now().astimezone(subscription.zone)
    return (now.year - then.year) * 12 + now.month - then.month + 1


@contextmanager
def broker_at(url: str):
    """Point the Celery app at another broker (its producer pools are rebuilt), and leave its
    configuration as it was found."""
    conf = app.conf
    names = ("broker_url", "broker_write_url", "broker_read_url")
    saved = {name: conf.changes[name] for name in names if name in conf.changes}

    def reset_pools():
        app._pool = None
        app.amqp._producer_pool = None

    for name in names:
        conf[name] = url
    reset_pools()
    try:
        yield
    finally:
        for name in names:
            conf.changes.pop(name, None)
        conf.changes.update(saved)
        reset_pools()


# --- The broker down ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_recording_works_with_the_broker_down_and_the_sweep_sends_the_alert_later(
    acme, key_client, django_capture_on_commit_callbacks, mailoutbox
):
    with broker_at(CLOSED_PORT_BROKER), django_capture_on_commit_callbacks(execute=True):
        statuses = [
            key_client.post("/api/v1/events/", event(acme, f"op-{n}"), format="json").status_code
            for n in range(3)  # 3, 6, 9 of 10 credits: the third crosses 80%
        ]

    assert statuses == [201, 201, 201]
    alert = ThresholdAlert.objects.get()
    assert alert.notified_at is None
    assert mailoutbox == []

    # The broker is back; the periodic sweep finds the alert nobody queued.
    with time_machine.travel(timezone.now() + notifications.SWEEP_AFTER + timedelta(minutes=1)):
        assert tasks.send_unsent_alerts() == 1
        assert tasks.send_unsent_alerts() == 0  # the next sweep: nothing left to send

    assert len(mailoutbox) == 1
    assert "80%" in mailoutbox[0].subject
    alert.refresh_from_db()
    assert alert.notified_at is not None


@pytest.mark.django_db
def test_the_month_start_task_works_with_the_broker_down(acme, mailoutbox):
    """Periods open and their reset notices are claimed; the sweep sends the notices."""
    Subscription.objects.filter(pk=acme.subscription.pk).update(
        created_at=timezone.now() - timedelta(days=70)
    )
    with broker_at(CLOSED_PORT_BROKER):
        outcome = tasks.open_billing_periods()
    assert outcome["reset_notices"] >= 1
    notices = ThresholdAlert.objects.filter(threshold=notifications.PERIOD_OPENED)
    assert notices.filter(notified_at__isnull=True).count() == outcome["reset_notices"]

    with time_machine.travel(timezone.now() + notifications.SWEEP_AFTER + timedelta(minutes=1)):
        assert tasks.send_unsent_alerts() == outcome["reset_notices"]
    assert not notices.filter(notified_at__isnull=True).exists()
    assert len([m for m in mailoutbox if acme.admin.email in m.to]) == 1


# --- SMTP failing -------------------------------------------------------------------------------


class FlakySMTPBackend(EmailBackend):
    """The in-memory backend behind an SMTP server that drops the first ``failures`` sends."""

    failures = 0

    def send_messages(self, messages):
        if FlakySMTPBackend.failures > 0:
            FlakySMTPBackend.failures -= 1
            raise SMTPServerDisconnected("Connection unexpectedly closed")
        return super().send_messages(messages)


@pytest.fixture
def flaky_smtp(settings):
    settings.EMAIL_BACKEND = f"{__name__}.FlakySMTPBackend"
    FlakySMTPBackend.failures = 0
    mail.outbox = []
    yield FlakySMTPBackend
    FlakySMTPBackend.failures = 0


@pytest.fixture
def alert(acme):
    period = period_for(subscription=acme.subscription, instant=timezone.now())
    return ThresholdAlert.objects.create(
        subscription=acme.subscription,
        period=period,
        threshold=ThresholdAlert.Threshold.ALLOCATION_80,
    )


@pytest.mark.django_db
def test_an_smtp_failure_is_retried_and_the_email_is_sent_once(alert, flaky_smtp):
    flaky_smtp.failures = 2

    # The task retries SMTP errors itself (autoretry on OSError): run eagerly, the retries run
    # in line until one gets through.
    assert issubclass(SMTPServerDisconnected, EMAIL_RETRY["autoretry_for"])
    result = tasks.send_threshold_alert.apply(args=[alert.pk])

    assert flaky_smtp.failures == 0  # both failures happened
    assert len(mail.outbox) == 1
    alert.refresh_from_db()
    assert alert.notified_at is not None
    assert result.state in ("SUCCESS", "RETRY")  # the first attempt's retry, already done

    # A late retry or a redelivered message sends nothing more.
    assert tasks.send_threshold_alert(alert.pk) is False
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_a_failed_send_rolls_back_and_the_sweep_stops_at_the_first_smtp_error(alert, flaky_smtp):
    flaky_smtp.failures = 1
    with pytest.raises(SMTPServerDisconnected):
        notifications.send_alert(alert_id=alert.pk)
    alert.refresh_from_db()
    assert alert.notified_at is None  # nothing claimed: the retry will send it
    assert mail.outbox == []

    flaky_smtp.failures = 1
    later = timezone.now() + notifications.SWEEP_AFTER + timedelta(minutes=1)
    with time_machine.travel(later):
        assert tasks.send_unsent_alerts() == 0  # SMTP still down: stop, try at the next sweep
        assert tasks.send_unsent_alerts() == 1
        assert tasks.send_unsent_alerts() == 0
    assert len(mail.outbox) == 1


# --- The database connection dropped mid-request ----------------------------------------------


def terminate(backend_pid: int) -> None:
    """Kill a PostgreSQL backend from outside, as a failover or a network cut would."""
    params = connection.get_connection_params()  # the host may be a socket directory
    with psycopg.connect(
        host=params.get("host") or "127.0.0.1",
        port=params.get("port") or 5432,
        user=params["user"],
        password=params.get("password") or None,
        dbname=params["dbname"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [backend_pid])


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_connection_dropped_after_the_charge_leaves_no_partial_charge(
    acme, key_client, monkeypatch
):
    """The counters are charged, then the connection dies before the rollup is written: the
    whole transaction is lost with it, the client gets a 503 in the error shape, and a retry
    with the same idempotency key records the event once."""
    subscription = acme.subscription
    before = ledger_state(subscription)
    upsert_rollup = recording.add_to_ledger

    def connection_dies(events, *, zone):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            terminate(cursor.fetchone()[0])
        return upsert_rollup(events, zone=zone)

    monkeypatch.setattr(recording, "add_to_ledger", connection_dies)
    response = key_client.post("/api/v1/events/", event(acme, "op-1"), format="json")

    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["error"]["code"] == "service_unavailable"
    assert ledger_state(subscription) == before

    monkeypatch.setattr(recording, "add_to_ledger", upsert_rollup)
    retried = key_client.post("/api/v1/events/", event(acme, "op-1"), format="json")
    assert retried.status_code == 201  # nothing of the first attempt was kept
    assert ledger_state(subscription) == {
        "events": 1,
        "used": [Decimal("3")],
        "rollups": Decimal("3"),
        "idempotency": 1,
    }


@pytest.mark.django_db
def test_a_database_error_mid_batch_is_a_503_and_the_batch_can_be_resent(
    acme, key_client, monkeypatch
):
    """A batch is stored in one transaction: a database error while writing it keeps none of
    its events (503), and resending it records each of them once."""
    upsert_rollup = recording.add_to_ledger

    def connection_fails(events, *, zone):
        raise OperationalError("server closed the connection unexpectedly")

    batch = {"events": [event(acme, f"op-{n}", credits="1") for n in range(3)]}
    monkeypatch.setattr(recording, "add_to_ledger", connection_fails)
    response = key_client.post("/api/v1/events/batch/", batch, format="json")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert ledger_state(acme.subscription) == {
        "events": 0,
        "used": [],
        "rollups": None,
        "idempotency": 0,
    }

    monkeypatch.setattr(recording, "add_to_ledger", upsert_rollup)
    resent = key_client.post("/api/v1/events/batch/", batch, format="json")
    assert [result["status"] for result in resent.json()["results"]] == [201, 201, 201]
    assert ledger_state(acme.subscription) == {
        "events": 3,
        "used": [Decimal("3")],
        "rollups": Decimal("3"),
        "idempotency": 3,
    }


# --- A worker killed mid-task ------------------------------------------------------------------


class WorkerKilled(BaseException):
    """What the task sees of SIGKILL: nothing after this point runs, nothing is acknowledged."""


def test_tasks_are_acknowledged_only_after_they_ran():
    """With acks_late a message whose worker died is delivered again (Redis visibility
    timeout), and a task whose worker was lost is not acknowledged as done."""
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    for task in (tasks.send_threshold_alert, tasks.send_reset_notice, tasks.send_unsent_alerts):
        assert task.acks_late is True


@pytest.mark.django_db
def test_a_worker_killed_while_sending_an_alert_sends_it_once_after_redelivery(
    alert, monkeypatch, mailoutbox
):
    compose = notifications._message
    deaths = iter([True])

    def dies_once(*args, **kwargs):
        if next(deaths, False):
            raise WorkerKilled
        return compose(*args, **kwargs)

    monkeypatch.setattr(notifications, "_message", dies_once)
    with pytest.raises(WorkerKilled):
        tasks.send_threshold_alert(alert.pk)  # the first delivery: the worker dies
    alert.refresh_from_db()
    assert alert.notified_at is None and mailoutbox == []

    assert tasks.send_threshold_alert(alert.pk) is True  # redelivered
    assert tasks.send_threshold_alert(alert.pk) is False  # redelivered again after the commit
    assert len(mailoutbox) == 1


@pytest.mark.django_db
def test_the_month_start_task_run_twice_opens_each_period_and_sends_each_notice_once(
    acme, django_capture_on_commit_callbacks, mailoutbox, settings
):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the notices are sent in line
    Subscription.objects.filter(pk=acme.subscription.pk).update(
        created_at=timezone.now() - timedelta(days=70)
    )
    with django_capture_on_commit_callbacks(execute=True):
        first = tasks.open_billing_periods()
    with django_capture_on_commit_callbacks(execute=True):
        second = tasks.open_billing_periods()  # the redelivered message, or a second beat

    assert first["subscriptions_caught_up"] >= 1 and first["reset_notices"] >= 1
    assert second == {"subscriptions_caught_up": 0, "reset_notices": 0}
    periods = BillingPeriod.objects.filter(subscription=acme.subscription)
    assert periods.count() == months_since(acme.subscription, timezone.now() - timedelta(days=70))
    assert len([m for m in mailoutbox if acme.admin.email in m.to]) == 1


# --- Many processes at once ---------------------------------------------------------------------

CHARGERS = 3
KEYS = 30  # 30 keys of 2 credits against 40 credits: 20 are accepted, 10 refused


def start(role: str, job: dict, env: dict) -> subprocess.Popen:
    return subprocess.Popen(  # noqa: S603 - our own module, arguments we built
        [sys.executable, "-m", "tests.reliability.charging_process", role, json.dumps(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=settings.BASE_DIR,
    )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_processes_charging_and_replaying_while_the_month_start_task_and_dispatch_run_twice(
    acme, tmp_path
):
    """Processes charge one subscription and replay each other's idempotency keys while two
    month-start runs and two report dispatches race: every key is charged at most once, the
    cap holds, each period and notice exists once, and the due report is emailed once."""
    from reports.models import Delivery, ReportSchedule

    subscription = acme.subscription
    subscription.base_allocation = Decimal("40")
    subscription.save()
    _, secret = factories.api_key(subscription)
    # Subscriptions whose periods the two month-start runs race to open (and notify).
    created = timezone.now() - timedelta(days=70)
    others = [factories.SubscriptionFactory(name=f"Late {n}") for n in range(5)]
    Subscription.objects.filter(pk__in=[s.pk for s in others]).update(created_at=created)
    for other in others:
        factories.membership(
            factories.UserFactory(email=f"admin{other.pk}@late.example"),
            Role.SUBSCRIPTION_ADMIN,
            subscription=other,
        )

    schedule = ReportSchedule.objects.create(
        subscription=subscription,
        created_by=acme.admin,
        name="Weekly",
        recipients=[acme.admin.email, "boss@acme.example"],
    )
    ReportSchedule.objects.filter(pk=schedule.pk).update(active_since=created)  # a report is due

    env = {
        **os.environ,
        "DATABASE_URL": child_database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "CELERY_TASK_ALWAYS_EAGER": "true",  # reset notices are sent in line, by memory mail
        "EMAIL_URL": "memorymail://",
        "LOG_LEVEL": "ERROR",
    }
    if os.environ.get(PIN_CLOCK_VARIABLE):
        env[PIN_CLOCK_VARIABLE] = timezone.now().isoformat()  # the processes share our clock
    go_file = str(tmp_path / "go")
    keys = [f"op-{n}" for n in range(KEYS)]
    processes = [
        start(
            "charge",
            {
                "secret": secret,
                "environment": str(acme.environment.public_id),
                "credits": "2",
                "keys": random.Random(n).sample(keys, len(keys)),  # same keys, other orders
                "go_file": go_file,
            },
            env,
        )
        for n in range(CHARGERS)
    ]
    processes += [start("open-periods", {"go_file": go_file}, env) for _ in range(2)]
    processes += [start("dispatch-reports", {"go_file": go_file}, env) for _ in range(2)]
    for process in processes:
        line = process.stdout.readline().strip()
        assert line == "ready", process.stderr.read()
    (tmp_path / "go").touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    charged = results[:CHARGERS]
    for key in keys:
        statuses = sorted(result[key] for result in charged)
        assert statuses in ([200] * (CHARGERS - 1) + [201], [402] * CHARGERS), (key, statuses)
    accepted = [key for key in keys if 201 in (result[key] for result in charged)]
    assert len(accepted) == 20

    events = CreditEvent.objects.filter(subscription=subscription)
    assert sorted(events.values_list("idempotency_key", flat=True)) == sorted(accepted)
    assert events.aggregate(total=Sum("credits"))["total"] == Decimal("40")
    period = BillingPeriod.objects.get(subscription=subscription)  # one, whoever opened it
    assert period.credits_used == Decimal("40")
    assert DailyUsage.objects.filter(subscription=subscription).aggregate(total=Sum("credits"))[
        "total"
    ] == Decimal("40")
    assert IdempotencyRecord.objects.filter(subscription=subscription).count() == 20

    openers = results[CHARGERS : CHARGERS + 2]
    assert sum(result["reset_notices"] for result in openers) == len(others)
    for other in others:
        periods = BillingPeriod.objects.filter(subscription=other)
        assert periods.count() == months_since(other, created)  # each month opened once
        notice = ThresholdAlert.objects.get(
            subscription=other, threshold=notifications.PERIOD_OPENED
        )
        assert notice.notified_at is not None

    assert sum(results[CHARGERS + 2 :]) == 1  # one dispatch claimed the report
    deliveries = Delivery.objects.filter(schedule=schedule)
    assert sorted(deliveries.values_list("recipient", "status")) == [
        (acme.admin.email, "sent"),
        ("boss@acme.example", "sent"),
    ]
