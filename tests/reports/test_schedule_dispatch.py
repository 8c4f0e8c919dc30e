"""Beat's dispatch and the send task: every report once per recipient and period, whatever
happens (beat twice, downtime, redelivery, SMTP failures, lost tasks), at the right local time."""

import smtplib
from datetime import timedelta
from io import StringIO
from unittest import mock

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.core.mail.backends.locmem import EmailBackend
from django.core.management import call_command
from django.test import Client

from accounts.models import Role
from accounts.services import remove_membership
from reports import tasks
from reports.models import Delivery, ReportSchedule
from reports.services import save_schedule
from reports.tasks import resend_failed
from tests.factories import utc
from tests.reports.recorder import EventRecorder
from tests.reports.test_schedule_email import make_schedule, run_beat

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

MONDAY_0805 = utc(2026, 11, 23, 7, 5)  # Monday 23 November 2026, 08:05 in Prague
Status = Delivery.Status


def deliveries() -> list[tuple]:
    return list(
        Delivery.objects.order_by("period_start", "recipient").values_list(
            "period_start", "recipient", "status", "attempts"
        )
    )


def sent_to(mailoutbox) -> list[str]:
    return sorted(email.to[0] for email in mailoutbox)


def test_beat_firing_twice_and_a_redelivered_task_send_one_email_per_recipient(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    schedule = make_schedule(world, created=utc(2026, 11, 17))

    assert run_beat(utc(2026, 11, 23, 6, 55), django_capture_on_commit_callbacks) == 0  # 07:55
    assert run_beat(MONDAY_0805, django_capture_on_commit_callbacks) == 1
    assert run_beat(MONDAY_0805, django_capture_on_commit_callbacks) == 0  # beat fires twice
    assert run_beat(MONDAY_0805 + timedelta(minutes=5), django_capture_on_commit_callbacks) == 0
    with time_machine.travel(MONDAY_0805, tick=False):
        assert tasks.send_scheduled_report(schedule.pk, "2026-11-16", "2026-11-22") == 0

    assert sent_to(mailoutbox) == ["finance@acme.example", "team.lead@outside.example"]
    monday = utc(2026, 11, 16).date()
    assert deliveries() == [
        (monday, "finance@acme.example", Status.SENT, 1),
        (monday, "team.lead@outside.example", Status.SENT, 1),
    ]
    assert Delivery.objects.filter(sent_at=MONDAY_0805).count() == 2


def test_a_beat_that_was_down_catches_up_once_on_each_schedule(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    weekly = make_schedule(world, name="Weekly", recipients=["finance@acme.example"])
    monthly = make_schedule(
        world, name="Monthly", frequency="monthly", recipients=["finance@acme.example"]
    )
    run_beat(utc(2026, 11, 20), django_capture_on_commit_callbacks)
    mailoutbox.clear()

    # Beat is down from 20 November to 2 December: the Monday 30 November and 1 December
    # reports were missed. The first run back sends each schedule's latest report, once.
    assert run_beat(utc(2026, 12, 2, 10), django_capture_on_commit_callbacks) == 2
    assert run_beat(utc(2026, 12, 2, 10, 5), django_capture_on_commit_callbacks) == 0

    assert sorted(email.subject for email in mailoutbox) == [
        "Monthly: Acme, November 2026",
        "Weekly: Acme, 23\N{EN DASH}29 November 2026",
    ]
    weekly.refresh_from_db()
    monthly.refresh_from_db()
    assert weekly.last_due_at == utc(2026, 11, 30, 7)
    assert monthly.last_due_at == utc(2026, 12, 1, 7)


def test_a_new_or_resumed_schedule_sends_nothing_that_fell_due_before(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    schedule = make_schedule(world, created=utc(2026, 11, 23, 9))  # after Monday's 08:00
    run_beat(utc(2026, 11, 23, 9, 5), django_capture_on_commit_callbacks)
    assert mailoutbox == []

    with time_machine.travel(utc(2026, 11, 24), tick=False):
        schedule.enabled = False
        save_schedule(schedule=schedule, actor=schedule.created_by)
    run_beat(utc(2026, 11, 30, 7, 5), django_capture_on_commit_callbacks)  # paused
    with time_machine.travel(utc(2026, 12, 1), tick=False):
        schedule.enabled = True
        save_schedule(schedule=schedule, actor=schedule.created_by)
    run_beat(utc(2026, 12, 1, 0, 5), django_capture_on_commit_callbacks)
    assert mailoutbox == []
    assert not Delivery.objects.exists()

    run_beat(utc(2026, 12, 7, 7, 5), django_capture_on_commit_callbacks)
    assert len(mailoutbox) == 2


@pytest.mark.parametrize(
    ("zone", "now", "inside", "outside"),
    [
        # The week of 23 to 29 March 2026 in Prague, whose Sunday loses an hour to DST. Its
        # report is due on Monday 30 March at 08:00 CEST (06:00 UTC).
        (
            "Europe/Prague",
            utc(2026, 3, 30, 6, 5),
            [utc(2026, 3, 22, 23, 30), utc(2026, 3, 29, 21, 30)],  # Mon 00:30 CET, Sun 23:30 CEST
            [utc(2026, 3, 22, 22, 30), utc(2026, 3, 29, 22, 30)],  # Sun 23:30 CET, Mon 00:30 CEST
        ),
        # Auckland, UTC+12 or +13: the week of 21 to 27 September 2026, across the start of
        # NZDT, is sent on Monday 28 September at 08:00 NZDT (27 September, 19:00 UTC).
        (
            "Pacific/Auckland",
            utc(2026, 9, 27, 19, 5),
            [utc(2026, 9, 20, 12, 30), utc(2026, 9, 27, 10, 30)],  # Mon 00:30 NZST, Sun 23:30 NZDT
            [utc(2026, 9, 20, 11, 30), utc(2026, 9, 27, 11, 30)],  # Sun 23:30 NZST, Mon 00:30 NZDT
        ),
    ],
)
def test_the_week_is_the_local_monday_to_sunday_across_dst(
    world, mailoutbox, django_capture_on_commit_callbacks, zone, now, inside, outside
):
    world.subscription.timezone = zone
    world.subscription.save()
    recorder = EventRecorder(world)
    for at in inside:
        recorder.record(at=at, credits="1")
    for at in outside:
        recorder.record(at=at, credits="100")
    make_schedule(world, recipients=["finance@acme.example"], created=now - timedelta(days=2))

    run_beat(now - timedelta(minutes=10), django_capture_on_commit_callbacks)
    assert mailoutbox == []
    run_beat(now, django_capture_on_commit_callbacks)

    (email,) = mailoutbox
    assert "Credits used: 2.0000\n" in email.body
    assert f"{zone} time" in email.body


def test_an_auckland_monthly_report_goes_out_early_on_its_first_while_utc_is_still_on_the_last(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    world.subscription.timezone = "Pacific/Auckland"
    world.subscription.save()
    recorder = EventRecorder(world)
    recorder.record(at=utc(2026, 10, 31, 11, 30), credits="3")  # 1 November 00:30 NZDT
    recorder.record(at=utc(2026, 11, 30, 10, 30), credits="4")  # 30 November 23:30 NZDT
    recorder.record(at=utc(2026, 11, 30, 11, 30), credits="50")  # 1 December 00:30 NZDT
    make_schedule(
        world, frequency="monthly", recipients=["finance@acme.example"], created=utc(2026, 11, 2)
    )

    run_beat(utc(2026, 11, 30, 18, 55), django_capture_on_commit_callbacks)
    assert mailoutbox == []
    run_beat(utc(2026, 11, 30, 19, 5), django_capture_on_commit_callbacks)  # 08:05 on the 1st

    (email,) = mailoutbox
    assert email.subject == "Usage report: Acme, November 2026"
    assert "Credits used: 7.0000\n" in email.body
    assert "As of 1 December 2026, 08:05 NZDT (Pacific/Auckland)" in email.body


def test_smtp_failures_are_retried_with_backoff_and_nobody_gets_two_emails(
    world, mailoutbox, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_EAGER_PROPAGATES = False  # let eager retries run, as a worker would
    make_schedule(world)
    send = EmailBackend.send_messages
    refused = []

    def flaky(backend, messages):
        if messages[0].to == ["team.lead@outside.example"] and len(refused) < 2:
            refused.append(messages[0].to[0])
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        return send(backend, messages)

    with mock.patch.object(EmailBackend, "send_messages", flaky):
        run_beat(MONDAY_0805, django_capture_on_commit_callbacks)

    assert refused == ["team.lead@outside.example"] * 2
    assert sent_to(mailoutbox) == ["finance@acme.example", "team.lead@outside.example"]
    monday = utc(2026, 11, 16).date()
    assert deliveries() == [
        (monday, "finance@acme.example", Status.SENT, 1),
        (monday, "team.lead@outside.example", Status.SENT, 3),
    ]
    retried = Delivery.objects.get(recipient="team.lead@outside.example")
    assert retried.last_error == "SMTPServerDisconnected: Connection unexpectedly closed"
    assert tasks.send_scheduled_report.max_retries == 10


def test_the_first_failure_schedules_a_retry_and_the_last_marks_the_delivery_failed(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    schedule = make_schedule(world, recipients=["finance@acme.example"])
    with time_machine.travel(MONDAY_0805, tick=False), django_capture_on_commit_callbacks():
        tasks.dispatch_due_reports()  # claimed; the queued task is left to the test
    down = smtplib.SMTPConnectError(421, "Service not available")
    args = [schedule.pk, "2026-11-16", "2026-11-22"]

    with (
        time_machine.travel(MONDAY_0805, tick=False),
        mock.patch.object(EmailBackend, "send_messages", side_effect=down),
        mock.patch.object(tasks.send_scheduled_report, "retry", side_effect=RuntimeError) as retry,
        pytest.raises(RuntimeError),
    ):
        tasks.send_scheduled_report.apply(args=args, throw=True)

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (Status.PENDING, 1)
    countdown = retry.call_args.kwargs["countdown"]
    assert 0 <= countdown <= 30  # 30 s, jittered, then doubling up to an hour
    assert delivery.next_attempt_at == MONDAY_0805 + timedelta(seconds=countdown)

    with mock.patch.object(EmailBackend, "send_messages", side_effect=down):
        result = tasks.send_scheduled_report.apply(args=args, retries=10)  # the last retry

    assert result.successful()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (Status.FAILED, 2)
    assert delivery.last_error == "SMTPConnectError: (421, 'Service not available')"
    assert mailoutbox == []

    with django_capture_on_commit_callbacks(execute=True):
        assert resend_failed(deliveries=Delivery.objects.all(), now=MONDAY_0805) == 1
    assert resend_failed(deliveries=Delivery.objects.all(), now=MONDAY_0805) == 0  # now sent
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (Status.SENT, 3)
    assert sent_to(mailoutbox) == ["finance@acme.example"]


def test_a_report_whose_task_was_lost_is_queued_again_by_a_later_dispatch(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    make_schedule(world)
    with time_machine.travel(MONDAY_0805, tick=False), django_capture_on_commit_callbacks():
        tasks.dispatch_due_reports()  # the broker lost the task queued at commit

    run_beat(MONDAY_0805 + timedelta(minutes=5), django_capture_on_commit_callbacks)
    assert mailoutbox == []  # it may still be on its way
    run_beat(MONDAY_0805 + timedelta(minutes=20), django_capture_on_commit_callbacks)

    assert sent_to(mailoutbox) == ["finance@acme.example", "team.lead@outside.example"]


def test_a_schedule_whose_owner_lost_access_sends_nothing_and_says_why(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    schedule = make_schedule(
        world,
        created_by=world.manager,
        scope="environment",
        environment=world.environment,
        recipients=["finance@acme.example"],
    )
    remove_membership(membership=world.manager.memberships.get(role=Role.PROJECT_MANAGER))

    run_beat(MONDAY_0805, django_capture_on_commit_callbacks)

    assert mailoutbox == []
    delivery = Delivery.objects.get()
    assert delivery.status == Status.FAILED
    assert "owner can no longer see this scope" in delivery.last_error

    # A subscription admin takes the schedule over in the admin, then resends.
    admin = Client()
    admin.force_login(world.admin)
    admin.post(
        "/admin/reports/reportschedule/",
        {"action": "take_ownership", "_selected_action": [schedule.pk]},
    )
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(
            "/admin/reports/reportschedule/",
            {"action": "resend_failed", "_selected_action": [schedule.pk]},
        )
    assert ReportSchedule.objects.get().created_by == world.admin
    assert [email.to for email in mailoutbox] == [["finance@acme.example"]]


def test_send_due_reports_sends_synchronously_and_is_safe_to_run_again(world, mailoutbox):
    make_schedule(world, name="Finance", recipients=["finance@acme.example"])
    make_schedule(world, name="Later", recipients=["x@acme.example"], created=utc(2026, 11, 23, 9))

    def run(*options) -> str:
        out = StringIO()
        with time_machine.travel(utc(2026, 11, 23, 9, 30), tick=False):
            call_command("send_due_reports", *options, stdout=out)
        return out.getvalue()

    assert run() == ("Sent Finance (2026-11-16 to 2026-11-22) to finance@acme.example.\n")
    assert run() == "No reports are due.\n"
    assert run("--include-past") == ("Sent Later (2026-11-16 to 2026-11-22) to x@acme.example.\n")
    assert run("--include-past") == "No reports are due.\n"
    assert sent_to(mailoutbox) == ["finance@acme.example", "x@acme.example"]


def test_the_schedules_validation_is_the_models(world):
    schedule = ReportSchedule(
        subscription=world.subscription,
        created_by=world.admin,
        name="Bad",
        recipients=["A@Acme.example", "a@acme.example", " b@acme.example ", "not-an-email"],
        attached_reports=["credit-usage", "usage-by-nothing"],
    )
    with pytest.raises(ValidationError) as error:
        save_schedule(schedule=schedule, actor=schedule.created_by)

    assert error.value.message_dict == {
        "recipients": ["Not valid email addresses: not-an-email."],
        "attached_reports": [
            "Unknown reports: usage-by-nothing. Choose among usage-by-user, usage-by-agent, "
            "usage-by-model, usage-by-product, usage-by-feature, "
            "usage-by-member-feature-credit-type, usage-by-team, "
            "usage-by-environment, usage-by-sub-account, credit-usage."
        ],
    }
    schedule.recipients = ["A@Acme.example", "a@acme.example", " b@acme.example "]
    schedule.attached_reports = ["credit-usage"]
    with pytest.raises(ValidationError) as error:
        save_schedule(schedule=schedule, actor=schedule.created_by)
    assert error.value.message_dict == {
        "attached_reports": [
            "The credit usage export covers a whole billing period: attach it to monthly reports."
        ]
    }
    schedule.frequency = "monthly"
    save_schedule(schedule=schedule, actor=schedule.created_by)
    assert schedule.recipients == ["a@acme.example", "b@acme.example"]


# --- Retries, from every entry point (issue 23) --------------------------------------------------

# The schedule the README states: 30 s doubling to an hour, ten retries, then failed.
DOCUMENTED_RETRY_DELAYS = [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_send_due_reports_during_an_smtp_outage_is_sent_once_when_smtp_is_back(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    make_schedule(world, name="Finance", recipients=["finance@acme.example"])
    down = smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
    out = StringIO()
    with (
        time_machine.travel(MONDAY_0805, tick=False),
        mock.patch.object(EmailBackend, "send_messages", side_effect=down),
        django_capture_on_commit_callbacks() as queued,  # no worker: the retry waits in the queue
    ):
        call_command("send_due_reports", stdout=out)

    assert out.getvalue() == (
        "Could not send Finance (2026-11-16 to 2026-11-22) yet (SMTP error); retrying in 30 s.\n"
    )
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (Status.PENDING, 1)  # not failed
    assert delivery.next_attempt_at == MONDAY_0805 + timedelta(seconds=30)
    assert delivery.last_error == "SMTPServerDisconnected: Connection unexpectedly closed"
    assert len(queued) == 1  # the retry handed to the worker

    # SMTP is back but the worker's retry was lost: the periodic dispatch sends it once it is
    # overdue (SWEEP_AFTER), and only once, whatever runs after it.
    assert run_beat(MONDAY_0805 + timedelta(minutes=5), django_capture_on_commit_callbacks) == 0
    assert mailoutbox == []
    assert run_beat(MONDAY_0805 + timedelta(minutes=20), django_capture_on_commit_callbacks) == 1
    assert run_beat(MONDAY_0805 + timedelta(minutes=25), django_capture_on_commit_callbacks) == 0
    with time_machine.travel(MONDAY_0805 + timedelta(minutes=30), tick=False):
        queued[0]()  # the worker's retry turns up late
        call_command("send_due_reports", stdout=StringIO())

    assert sent_to(mailoutbox) == ["finance@acme.example"]
    assert deliveries() == [(utc(2026, 11, 16).date(), "finance@acme.example", Status.SENT, 2)]


def test_the_worker_retries_with_the_documented_backoff_then_marks_the_delivery_failed(
    world, mailoutbox, django_capture_on_commit_callbacks, client
):
    """Each attempt's retry is queued with the README's delay (no jitter), the same on the
    delivery's ``next_attempt_at``; the eleventh failure marks it failed, shown in the admin."""
    schedule = make_schedule(world, recipients=["finance@acme.example"])
    with time_machine.travel(MONDAY_0805, tick=False), django_capture_on_commit_callbacks():
        tasks.dispatch_due_reports()
    down = smtplib.SMTPConnectError(421, "Service not available")
    args = [schedule.pk, "2026-11-16", "2026-11-22"]
    delays, at = [], MONDAY_0805
    for retries in range(11):
        with (
            time_machine.travel(at, tick=False),
            mock.patch.object(EmailBackend, "send_messages", side_effect=down),
            mock.patch.object(
                tasks.send_scheduled_report, "retry", side_effect=RuntimeError
            ) as retry,
        ):
            tasks.send_scheduled_report.apply(args=args, retries=retries, throw=False)
        delivery = Delivery.objects.get()
        assert delivery.attempts == retries + 1
        if retry.called:
            delays.append(retry.call_args.kwargs["countdown"])
            assert delivery.next_attempt_at == at + timedelta(seconds=delays[-1])
            at = delivery.next_attempt_at

    assert delays == DOCUMENTED_RETRY_DELAYS
    assert (delivery.status, delivery.next_attempt_at) == (Status.FAILED, None)
    assert mailoutbox == []
    client.force_login(world.admin)
    page = client.get("/admin/reports/delivery/?status__exact=failed").content.decode()
    assert "finance@acme.example" in page and "Failed" in page


def test_the_alert_emails_retry_on_the_same_documented_schedule():
    from celery.utils.time import get_exponential_backoff_interval

    from core.retry import EMAIL_RETRY
    from credits.tasks import send_threshold_alert
    from reports.services import MAX_ATTEMPTS, retry_delay

    assert send_threshold_alert.max_retries == EMAIL_RETRY["max_retries"] == 10
    assert send_threshold_alert.retry_jitter is False
    autoretry = [
        get_exponential_backoff_interval(
            factor=send_threshold_alert.retry_backoff,
            retries=retries,
            maximum=send_threshold_alert.retry_backoff_max,
            full_jitter=send_threshold_alert.retry_jitter,
        )
        for retries in range(10)
    ]
    assert autoretry == DOCUMENTED_RETRY_DELAYS
    assert [retry_delay(attempt) for attempt in range(1, MAX_ATTEMPTS)] == DOCUMENTED_RETRY_DELAYS
