"""Threshold alerts: each admin gets one email per threshold per period, whatever happens."""

import smtplib
import threading
import time
from decimal import Decimal
from unittest import mock
from urllib.parse import urlsplit

import pytest
import time_machine
from django.core.mail.backends.locmem import EmailBackend
from django.db import connection
from django.utils import timezone

from accounts.models import Role
from credits.billing import period_for
from credits.models import BillingPeriod, ThresholdAlert
from credits.tasks import send_threshold_alert, send_unsent_alerts
from tests import factories
from tests.factories import utc

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

Threshold = ThresholdAlert.Threshold


@pytest.fixture
def second_admin(world):
    dave = factories.UserFactory(email="dave@acme.example")
    factories.membership(dave, Role.SUBSCRIPTION_ADMIN, subscription=world.subscription)
    return dave


def crossed(world, threshold, *, used="800", excess="0") -> ThresholdAlert:
    """A crossing as the recording service leaves it: counters charged, alert not yet sent."""
    period = period_for(subscription=world.subscription, instant=timezone.now())
    BillingPeriod.objects.filter(pk=period.pk).update(
        credits_used=Decimal(used), excess_used=Decimal(excess)
    )
    return ThresholdAlert.objects.create(
        subscription=world.subscription, period=period, threshold=threshold
    )


@time_machine.travel(utc(2026, 3, 20, 12), tick=False)
def test_each_admin_gets_the_alert_once_even_when_the_task_runs_twice(
    world, second_admin, mailoutbox
):
    alert = crossed(world, Threshold.ALLOCATION_80)

    assert send_threshold_alert(alert.pk) is True
    assert send_threshold_alert(alert.pk) is False
    send_threshold_alert.delay(alert.pk)  # a redelivered message

    (email,) = mailoutbox
    assert email.to == ["alice@acme.example", "dave@acme.example"]
    assert email.subject == "Acme crossed 80% of its credits for March 2026"
    assert "Acme crossed 80% of its base allocation for March 2026; usage is now 80.0%." in (
        email.body
    )
    assert "Used: 800.0000 of 1,000.0000 credits (80.0%)" in email.body
    assert "Resets on: 1 April 2026, in 12 days" in email.body
    html, mimetype = email.alternatives[0]
    assert mimetype == "text/html"
    assert "<strong>800.0000</strong> of 1,000.0000 credits" in html
    alert.refresh_from_db()
    assert alert.notified_at == utc(2026, 3, 20, 12)


@time_machine.travel(utc(2026, 3, 20, 12), tick=False)
def test_the_80_percent_alert_says_which_threshold_was_crossed_and_the_usage_now(world, mailoutbox):
    """One large event (or soft mode) can take usage well past 80%: the alert says both."""
    world.subscription.limit_mode = "soft"
    world.subscription.excess_allowance = Decimal("200")
    world.subscription.save()
    alert = crossed(world, Threshold.ALLOCATION_80, used="1062", excess="62")

    send_threshold_alert(alert.pk)

    (email,) = mailoutbox
    assert email.subject == "Acme crossed 80% of its credits for March 2026"
    headline = "Acme crossed 80% of its base allocation for March 2026; usage is now 106.2%."
    assert email.body.startswith(headline)
    assert headline in email.alternatives[0][0]
    assert "Used: 1,062.0000 of 1,000.0000 credits (106.2%)" in email.body


def test_the_100_percent_alert_says_the_cap_was_reached_and_the_usage_now(world, mailoutbox):
    """In hard mode the first refused event counts as reaching the cap, from 80% on."""
    alert = crossed(world, Threshold.ALLOCATION_100, used="950")

    send_threshold_alert(alert.pk)

    assert "Acme reached its base allocation of 1,000.0000 credits for" in mailoutbox[0].body
    assert "; usage is now 95.0%." in mailoutbox[0].body


def test_an_alert_sent_after_its_period_ended_says_how_the_period_ended(world, mailoutbox):
    with time_machine.travel(utc(2026, 3, 31, 12), tick=False):
        alert = crossed(world, Threshold.ALLOCATION_80, used="930")

    with time_machine.travel(utc(2026, 4, 1, 12), tick=False):
        send_threshold_alert(alert.pk)

    body = mailoutbox[0].body
    headline = "Acme crossed 80% of its base allocation for March 2026; usage ended the period at"
    assert f"{headline} 93.0%." in body
    assert "Ended: reset on 1 April 2026" in body
    assert "Resets on" not in body


def test_the_outsider_and_lower_roles_are_not_emailed(world, mailoutbox):
    alert = crossed(world, Threshold.ALLOCATION_100, used="1000")

    send_threshold_alert(alert.pk)

    (email,) = mailoutbox
    assert email.to == [world.admin.email]
    assert "Further usage is refused" in email.body


def test_soft_mode_says_usage_continues_as_excess(world, mailoutbox):
    world.subscription.limit_mode = "soft"
    world.subscription.excess_allowance = Decimal("200")
    world.subscription.save()
    alert = crossed(world, Threshold.ALLOCATION_100, used="1000")

    send_threshold_alert(alert.pk)

    assert "Usage continues as excess credits, up to the excess allowance of 200" in (
        mailoutbox[0].body
    )


def test_names_are_not_html_escaped_in_the_plain_text(world, mailoutbox):
    world.subscription.name = "Smith & Sons <Ltd>"
    world.subscription.save()

    send_threshold_alert(crossed(world, Threshold.EXCESS_100).pk)

    email = mailoutbox[0]
    assert "Smith & Sons <Ltd> reached its excess allowance of" in email.body
    assert "Smith &amp; Sons &lt;Ltd&gt;" in email.alternatives[0][0]


def test_an_smtp_failure_leaves_the_alert_unsent_for_the_retry(world, mailoutbox):
    alert = crossed(world, Threshold.ALLOCATION_80)
    failure = smtplib.SMTPServerDisconnected("Connection unexpectedly closed")

    with (
        mock.patch.object(EmailBackend, "send_messages", side_effect=failure),
        pytest.raises(smtplib.SMTPServerDisconnected),
    ):
        send_threshold_alert(alert.pk)  # called directly, a retry re-raises

    alert.refresh_from_db()
    assert alert.notified_at is None
    assert mailoutbox == []
    assert send_threshold_alert(alert.pk) is True
    assert len(mailoutbox) == 1


def test_the_task_retries_smtp_errors_with_backoff(world, mailoutbox, settings):
    settings.CELERY_TASK_EAGER_PROPAGATES = False  # let eager retries run, as a worker would
    alert = crossed(world, Threshold.ALLOCATION_80)
    send = EmailBackend.send_messages
    attempts = []

    def flaky(backend, messages):
        attempts.append(len(messages))
        if len(attempts) < 3:
            raise smtplib.SMTPServerDisconnected("try again")
        return send(backend, messages)

    with mock.patch.object(EmailBackend, "send_messages", flaky):
        result = send_threshold_alert.apply(args=[alert.pk])

    assert result.successful()
    assert len(attempts) == 3
    assert len(mailoutbox) == 1
    assert send_threshold_alert.retry_backoff == 30
    assert issubclass(smtplib.SMTPException, send_threshold_alert.autoretry_for)


def test_an_alert_that_no_longer_exists_is_skipped(world, mailoutbox):
    assert send_threshold_alert(10**9) is False
    assert mailoutbox == []


def test_crossing_a_threshold_over_the_api_emails_the_admins_after_commit(
    world, key_client, event_payload, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = key_client.post("/api/v1/events/", event_payload(credits="850"), format="json")
    with django_capture_on_commit_callbacks(execute=True):
        key_client.post("/api/v1/events/", event_payload(credits="10"), format="json")

    assert response.status_code == 201
    (email,) = mailoutbox
    assert email.subject.startswith("Acme crossed 80% of its credits")
    assert "Used: 850.0000 of 1,000.0000 credits (85.0%)" in email.body


def test_the_sweep_sends_alerts_whose_task_was_lost(world, mailoutbox):
    with time_machine.travel(utc(2026, 3, 20, 12), tick=False):
        lost = crossed(world, Threshold.ALLOCATION_80)
    with time_machine.travel(utc(2026, 3, 20, 12, 5), tick=False):
        fresh = ThresholdAlert.objects.create(
            subscription=world.subscription, period=lost.period, threshold=Threshold.ALLOCATION_100
        )

    with time_machine.travel(utc(2026, 3, 20, 12, 12), tick=False):
        assert send_unsent_alerts() == 1  # the fresh one is still its own task's job
        assert send_unsent_alerts() == 0

    assert len(mailoutbox) == 1
    fresh.refresh_from_db()
    assert fresh.notified_at is None


def test_the_sweep_stops_at_the_first_smtp_error_and_tries_again_next_time(world, mailoutbox):
    with time_machine.travel(utc(2026, 3, 20, 12), tick=False):
        first = crossed(world, Threshold.ALLOCATION_80)
        ThresholdAlert.objects.create(
            subscription=world.subscription, period=first.period, threshold=Threshold.ALLOCATION_100
        )

    with time_machine.travel(utc(2026, 3, 20, 12, 15), tick=False):
        with mock.patch.object(
            EmailBackend, "send_messages", side_effect=smtplib.SMTPConnectError(421, "busy")
        ) as smtp:
            assert send_unsent_alerts() == 0
        assert smtp.call_count == 1
        assert send_unsent_alerts() == 2

    assert len(mailoutbox) == 2
    assert not ThresholdAlert.objects.filter(notified_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_workers_sending_the_same_alert_send_it_once(mailoutbox):
    subscription = factories.SubscriptionFactory(name="Acme")
    admin = factories.UserFactory(email="alice@acme.example")
    factories.membership(admin, Role.SUBSCRIPTION_ADMIN, subscription=subscription)
    period = period_for(subscription=subscription, instant=timezone.now())
    alert = ThresholdAlert.objects.create(
        subscription=subscription, period=period, threshold=Threshold.ALLOCATION_80
    )
    send = EmailBackend.send_messages
    start = threading.Barrier(3)
    results = []

    def slow_smtp(backend, messages):
        time.sleep(0.3)
        return send(backend, messages)

    def worker():
        try:
            start.wait()
            results.append(send_threshold_alert(alert.pk))
        finally:
            connection.close()

    with mock.patch.object(EmailBackend, "send_messages", slow_smtp):
        threads = [threading.Thread(target=worker) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(results) == [False, False, True]
    assert len(mailoutbox) == 1


@time_machine.travel(utc(2026, 3, 20, 12), tick=False)
def test_the_alert_links_its_admins_to_the_subscriptions_dashboard_in_the_brand(
    world, mailoutbox, settings
):
    """Admins receive alerts: "See the usage" opens the subscription's dashboard in the admin,
    not their personal /usage/ page (which shows only what they used themselves)."""
    settings.SITE_URL = "https://creditdesk.example/"
    alert = crossed(world, Threshold.ALLOCATION_100, used="1000")

    send_threshold_alert(alert.pk)

    (email,) = mailoutbox
    dashboard = (
        f"https://creditdesk.example/admin/credit-usage/?subscription={world.subscription.pk}"
    )
    html = email.alternatives[0][0]
    assert f'<a href="{dashboard}"' in html
    assert ">See the usage</a>" in html
    assert f"See the usage: {dashboard}\n" in email.body
    assert "/usage/\n" not in email.body
    # The brand: the header, the design tokens' colours and a fluid 600 px frame, inline.
    assert "Creditdesk</td>" in html
    assert "max-width: 600px" in html and "width: 100%" in html
    assert "background-color: #1d4ed8" in html  # the brand token, on the button
    assert "<style" not in html and "class=" not in html and "<link" not in html


@time_machine.travel(utc(2026, 3, 20, 12), tick=False)
def test_the_dashboard_link_of_an_alert_shows_the_admin_their_subscription_only(
    client, world, mailoutbox
):
    alert = crossed(world, Threshold.ALLOCATION_80)
    send_threshold_alert(alert.pk)
    (email,) = mailoutbox
    link = urlsplit(email.body.split("See the usage: ")[1].split()[0])
    path = f"{link.path}?{link.query}"

    client.force_login(world.admin)
    assert client.get(path).context["page"].subscription == world.subscription
    client.force_login(world.outsider)
    assert client.get(path).status_code == 404
    client.force_login(world.member)
    assert client.get(path).status_code == 302
