"""The beat task opens each subscription's period when its local month starts, wherever it is.

Beat runs ``open_billing_periods`` every 15 minutes (UTC); these tests run it by hand at the
instants around each month start, with time frozen.
"""

import smtplib
import threading
from datetime import datetime, timedelta
from unittest import mock

import pytest
import time_machine
from django.core.mail.backends.locmem import EmailBackend
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError

from accounts.models import Role, Subscription
from credits import notifications
from credits.billing import period_for
from credits.models import BillingPeriod, ThresholdAlert
from credits.notifications import PERIOD_OPENED
from credits.periods import periods_through
from credits.tasks import open_billing_periods, send_reset_notices, send_unsent_alerts
from tests import factories
from tests.factories import utc

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def subscription_in(zone: str, *, created: datetime, name: str = "Kiwi") -> Subscription:
    """A subscription created at ``created`` with its admin and the period it started in."""
    with time_machine.travel(created, tick=False):
        subscription = factories.SubscriptionFactory(name=name, timezone=zone)
        admin = factories.UserFactory(email=f"admin@{name.lower()}.example")
        factories.membership(admin, Role.SUBSCRIPTION_ADMIN, subscription=subscription)
        period_for(subscription=subscription, instant=timezone.now())
    return subscription


def run_beat(at: datetime, capture) -> dict:
    with time_machine.travel(at, tick=False), capture(execute=True):
        return open_billing_periods()


def bounds(subscription) -> list[tuple[datetime, datetime]]:
    return list(
        BillingPeriod.objects.filter(subscription=subscription)
        .order_by("start")
        .values_list("start", "end")
    )


ZONES = ["Pacific/Auckland", "Asia/Kolkata", "Europe/Prague", "America/Los_Angeles", "UTC"]


def cohort(count: int) -> list[Subscription]:
    """``count`` subscriptions created on 10 January in several time zones, in three states on
    1 April: up to date until March, last seen in January (beat missed two months), and never
    used (no period at all)."""
    subscriptions = []
    for n in range(count):
        with time_machine.travel(utc(2026, 1, 10), tick=False):
            subscription = factories.SubscriptionFactory(timezone=ZONES[n % len(ZONES)])
        months = {0: [utc(2026, 1, 20), utc(2026, 2, 15), utc(2026, 3, 15)], 1: [utc(2026, 1, 20)]}
        for instant in months.get(n % 3, []):
            period_for(subscription=subscription, instant=instant)
        subscriptions.append(subscription)
    return subscriptions


@pytest.mark.parametrize(
    ("zone", "created", "month_start", "month_end", "month"),
    [
        # 1 Feb 00:00 in Auckland (UTC+13, summer) is 11:00 UTC on 31 Jan.
        ("Pacific/Auckland", utc(2026, 1, 10), utc(2026, 1, 31, 11), utc(2026, 2, 28, 11), "Feb"),
        # 1 Mar 00:00 in Los Angeles is 08:00 UTC (PST); the month ends in PDT (UTC-7).
        ("America/Los_Angeles", utc(2026, 2, 10), utc(2026, 3, 1, 8), utc(2026, 4, 1, 7), "Mar"),
        # New Year in Prague (UTC+1) is 23:00 UTC on 31 Dec.
        ("Europe/Prague", utc(2026, 12, 10), utc(2026, 12, 31, 23), utc(2027, 1, 31, 23), "Jan"),
    ],
)
def test_it_opens_the_period_when_the_local_month_starts(
    zone, created, month_start, month_end, month, mailoutbox, django_capture_on_commit_callbacks
):
    subscription = subscription_in(zone, created=created)
    (first_period,) = bounds(subscription)

    run_beat(month_start - timedelta(minutes=1), django_capture_on_commit_callbacks)

    assert bounds(subscription) == [first_period]
    assert mailoutbox == []  # created mid-month: its first period was no reset

    run_beat(month_start + timedelta(minutes=7), django_capture_on_commit_callbacks)

    assert bounds(subscription) == [first_period, (month_start, month_end)]
    (notice,) = mailoutbox
    assert notice.to == ["admin@kiwi.example"]
    assert notice.subject.startswith("Kiwi: your credits have been reset for " + month)
    assert "1,000.0000 credits" in notice.body
    assert notice.alternatives[0][1] == "text/html"


def test_running_twice_opens_one_period_and_sends_one_notice(
    mailoutbox, django_capture_on_commit_callbacks
):
    subscription = subscription_in("Europe/Prague", created=utc(2026, 1, 10))
    first_run = run_beat(utc(2026, 1, 31, 23, 5), django_capture_on_commit_callbacks)

    second_run = run_beat(utc(2026, 1, 31, 23, 20), django_capture_on_commit_callbacks)

    assert first_run == {"subscriptions_caught_up": 1, "reset_notices": 1}
    assert second_run == {"subscriptions_caught_up": 0, "reset_notices": 0}
    assert len(bounds(subscription)) == 2
    assert len(mailoutbox) == 1
    assert ThresholdAlert.objects.filter(threshold=PERIOD_OPENED).count() == 1


def test_a_beat_skipped_for_two_months_catches_up_with_one_notice(
    mailoutbox, django_capture_on_commit_callbacks
):
    subscription = subscription_in("Europe/Prague", created=utc(2026, 1, 5))
    run_beat(utc(2026, 1, 20), django_capture_on_commit_callbacks)
    # Beat is down from late January; it comes back on 1 April at 10:00 in Prague.

    run_beat(utc(2026, 4, 1, 8), django_capture_on_commit_callbacks)
    run_beat(utc(2026, 4, 1, 8, 15), django_capture_on_commit_callbacks)

    assert bounds(subscription) == [
        (utc(2025, 12, 31, 23), utc(2026, 1, 31, 23)),
        (utc(2026, 1, 31, 23), utc(2026, 2, 28, 23)),
        (utc(2026, 2, 28, 23), utc(2026, 3, 31, 22)),  # summer time from 29 March
        (utc(2026, 3, 31, 22), utc(2026, 4, 30, 22)),
    ]
    (notice,) = mailoutbox
    assert "reset for April 2026" in notice.subject
    notices = ThresholdAlert.objects.filter(threshold=PERIOD_OPENED)
    assert list(notices.values_list("period__start", flat=True)) == [utc(2026, 3, 31, 22)]


def test_a_period_already_opened_by_an_event_still_gets_its_notice(
    mailoutbox, django_capture_on_commit_callbacks
):
    subscription = subscription_in("America/Los_Angeles", created=utc(2026, 2, 10))
    # The first event of March arrives before beat's next run and opens the period lazily.
    period_for(subscription=subscription, instant=utc(2026, 3, 1, 8, 1))

    result = run_beat(utc(2026, 3, 1, 8, 10), django_capture_on_commit_callbacks)

    assert result == {"subscriptions_caught_up": 0, "reset_notices": 1}
    assert len(bounds(subscription)) == 2
    assert len(mailoutbox) == 1


def test_a_subscription_without_periods_gets_every_month_since_it_was_created(
    mailoutbox, django_capture_on_commit_callbacks
):
    with time_machine.travel(utc(2026, 5, 20), tick=False):
        subscription = factories.SubscriptionFactory(timezone="UTC")

    run_beat(utc(2026, 7, 2), django_capture_on_commit_callbacks)

    assert [start for start, _ in bounds(subscription)] == [
        utc(2026, 5, 1),
        utc(2026, 6, 1),
        utc(2026, 7, 1),
    ]
    assert mailoutbox == []  # no admin to tell; the claim is still made once
    assert ThresholdAlert.objects.get(threshold=PERIOD_OPENED).notified_at is not None


def test_a_broken_subscription_does_not_stop_the_others(
    mailoutbox, django_capture_on_commit_callbacks
):
    healthy = subscription_in("Europe/Prague", created=utc(2026, 1, 10))
    broken = subscription_in("Europe/Prague", created=utc(2026, 1, 10), name="Broken")
    Subscription.objects.filter(pk=broken.pk).update(timezone="Mars/Olympus_Mons")

    run_beat(utc(2026, 2, 1), django_capture_on_commit_callbacks)

    assert len(bounds(healthy)) == 2
    assert len(bounds(broken)) == 1
    assert [message.to for message in mailoutbox] == [["admin@kiwi.example"]]


@pytest.mark.parametrize("count", [1, 30])
def test_the_month_start_takes_the_same_queries_for_any_number_of_subscriptions(
    count, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    subscriptions = cohort(count)
    now = utc(2026, 4, 1, 12)  # 1 April in every one of ZONES

    with (
        time_machine.travel(now, tick=False),
        django_capture_on_commit_callbacks() as callbacks,
        # Who is behind, open their months, claim the notices; and the savepoint and the
        # planner setting (``SET LOCAL``) that go with the first two.
        django_assert_max_num_queries(6),
    ):
        result = open_billing_periods()

    assert result == {"subscriptions_caught_up": count, "reset_notices": count}
    for subscription in subscriptions:
        # The months of its own time zone, contiguous, exactly as recording computes them.
        months = periods_through(utc(2026, 1, 10), now, subscription.zone)
        assert bounds(subscription) == [(month.start, month.end) for month in months]
        assert period_for(subscription=subscription, instant=now).start == months[-1].start
        notice = ThresholdAlert.objects.get(subscription=subscription, threshold=PERIOD_OPENED)
        assert notice.period.start == months[-1].start
    assert len(callbacks) == 1  # the notices are queued once the claim commits


def test_reset_notices_are_queued_in_chunks(
    monkeypatch, mailoutbox, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(notifications, "NOTICES_PER_TASK", 10)
    for n in range(25):
        subscription_in("Europe/Prague", created=utc(2026, 1, 10), name=f"Kiwi{n}")

    with mock.patch.object(
        send_reset_notices, "delay", wraps=send_reset_notices.delay
    ) as queue_chunk:
        result = run_beat(utc(2026, 1, 31, 23, 5), django_capture_on_commit_callbacks)

    assert result["reset_notices"] == 25
    chunks = [call.args[0] for call in queue_chunk.call_args_list]
    assert [len(chunk) for chunk in chunks] == [10, 10, 5]
    notices = ThresholdAlert.objects.filter(threshold=PERIOD_OPENED)
    queued = [alert_id for chunk in chunks for alert_id in chunk]
    assert sorted(queued) == sorted(notices.values_list("pk", flat=True))
    assert sorted(message.to[0] for message in mailoutbox) == sorted(
        f"admin@kiwi{n}.example" for n in range(25)
    )
    assert not notices.filter(notified_at__isnull=True).exists()


def test_a_chunk_retried_after_an_smtp_error_sends_each_notice_once(
    mailoutbox, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_EAGER_PROPAGATES = False  # let eager retries run, as a worker would
    for n in range(3):
        subscription_in("Europe/Prague", created=utc(2026, 1, 10), name=f"Kiwi{n}")
    with mock.patch.object(send_reset_notices, "delay"):  # queued, not sent yet
        run_beat(utc(2026, 1, 31, 23, 5), django_capture_on_commit_callbacks)
    alert_ids = sorted(ThresholdAlert.objects.values_list("pk", flat=True))
    send = EmailBackend.send_messages
    attempts = []

    def second_send_fails_once(backend, messages):
        attempts.append(messages[0].to)
        if len(attempts) == 2:
            raise smtplib.SMTPServerDisconnected("try again")
        return send(backend, messages)

    with mock.patch.object(EmailBackend, "send_messages", second_send_fails_once):
        result = send_reset_notices.apply(args=[alert_ids])

    assert result.successful()
    assert len(attempts) == 4  # the first notice is not sent again by the retry
    assert sorted(message.to[0] for message in mailoutbox) == [
        "admin@kiwi0.example",
        "admin@kiwi1.example",
        "admin@kiwi2.example",
    ]


def test_with_the_broker_down_the_notices_wait_for_the_sweep(
    monkeypatch, mailoutbox, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(notifications, "NOTICES_PER_TASK", 2)
    for n in range(5):
        subscription_in("Europe/Prague", created=utc(2026, 1, 10), name=f"Kiwi{n}")
    down = OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    with mock.patch.object(send_reset_notices, "delay", side_effect=down) as queue_chunk:
        result = run_beat(utc(2026, 1, 31, 23, 5), django_capture_on_commit_callbacks)

    assert result == {"subscriptions_caught_up": 5, "reset_notices": 5}
    assert queue_chunk.call_count == 1  # one failed attempt, not one per chunk
    assert mailoutbox == []
    with time_machine.travel(utc(2026, 1, 31, 23, 20), tick=False):
        assert send_unsent_alerts() == 5
    assert len(mailoutbox) == 5


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_beats_at_once_open_one_period_and_send_one_notice(mailoutbox):
    subscription = subscription_in("Pacific/Auckland", created=utc(2026, 1, 10))
    others = cohort(12)  # with months to catch up, in several time zones
    start = threading.Barrier(4)
    results, failures = [], []

    def beat():
        try:
            start.wait()
            results.append(open_billing_periods())
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            connection.close()

    with time_machine.travel(utc(2026, 4, 1, 12), tick=False):
        threads = [threading.Thread(target=beat) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert failures == []
    assert len(bounds(subscription)) == 4
    for other in others:
        assert len(bounds(other)) == 4  # January to April, each once
    assert sum(result["reset_notices"] for result in results) == 13
    assert ThresholdAlert.objects.filter(threshold=PERIOD_OPENED).count() == 13
    assert [message.to for message in mailoutbox] == [["admin@kiwi.example"]]
