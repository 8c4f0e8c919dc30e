"""The signed one-click unsubscribe link of each report email: no login, no CSRF token, and an
unsubscribed recipient gets no more of that report."""

import re

import pytest
import time_machine
from django.test import Client

from reports import tasks
from reports.models import Delivery, Unsubscribe
from reports.unsubscribe import unsubscribe_token
from tests.factories import utc
from tests.reports.test_schedule_email import make_schedule, run_beat

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery", "site_url")]

MONDAY = utc(2026, 11, 23, 7, 5)
NEXT_MONDAY = utc(2026, 11, 30, 7, 5)


@pytest.fixture
def schedule(world):
    return make_schedule(world)


def link_in(email) -> str:
    """The path of the unsubscribe link, as the email body and its header give it."""
    url = re.search(r"Unsubscribe from this report: (\S+)", email.body)[1]
    assert email.extra_headers["List-Unsubscribe"] == f"<{url}>"
    assert email.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    return url.removeprefix("https://creditdesk.example")


def email_to(mailoutbox, address):
    return next(email for email in mailoutbox if email.to == [address])


def test_the_link_unsubscribes_without_logging_in_and_no_more_reports_follow(
    schedule, mailoutbox, django_capture_on_commit_callbacks
):
    run_beat(MONDAY, django_capture_on_commit_callbacks)
    link = link_in(email_to(mailoutbox, "team.lead@outside.example"))
    assert link != link_in(email_to(mailoutbox, "finance@acme.example"))  # one per recipient
    browser = Client(enforce_csrf_checks=True)

    page = browser.get(link)
    assert page.status_code == 200
    assert "Unsubscribe from this report?" in page.text
    assert not Unsubscribe.objects.exists()  # a GET (or a mail scanner) changes nothing

    done = browser.post(link, {"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    assert "You are unsubscribed" in done.text
    assert list(Unsubscribe.objects.values_list("schedule_id", "email")) == [
        (schedule.pk, "team.lead@outside.example")
    ]

    mailoutbox.clear()
    run_beat(NEXT_MONDAY, django_capture_on_commit_callbacks)
    assert [email.to for email in mailoutbox] == [["finance@acme.example"]]
    assert not Delivery.objects.filter(
        recipient="team.lead@outside.example", period_start=utc(2026, 11, 23).date()
    ).exists()


def test_a_mail_clients_one_click_post_unsubscribes_and_the_page_can_undo_it(schedule):
    token = unsubscribe_token(schedule_id=schedule.pk, email="finance@acme.example")
    link = f"/reports/unsubscribe/{token}/"
    client = Client(enforce_csrf_checks=True)

    response = client.post(link, "List-Unsubscribe=One-Click", content_type="text/plain")
    assert response.status_code == 200
    assert Unsubscribe.objects.filter(email="finance@acme.example").exists()
    client.post(link, {"List-Unsubscribe": "One-Click"})  # clicking twice is fine
    assert Unsubscribe.objects.count() == 1

    undone = client.post(link, {"action": "resubscribe"})
    assert "You are subscribed again" in undone.text
    assert not Unsubscribe.objects.exists()


def test_a_tampered_link_is_refused_and_a_deleted_schedules_link_is_not_found(schedule):
    token = unsubscribe_token(schedule_id=schedule.pk, email="finance@acme.example")
    other = unsubscribe_token(schedule_id=schedule.pk, email="ceo@acme.example")
    forged = token.split(":")[0] + ":" + other.split(":", 1)[1]  # another signature
    client = Client()

    assert client.get(f"/reports/unsubscribe/{token[:-2]}xx/").status_code == 400
    assert client.post(f"/reports/unsubscribe/{forged}/").status_code == 400
    assert client.get("/reports/unsubscribe/not-a-token/").status_code == 400
    assert not Unsubscribe.objects.exists()
    schedule.delete()
    assert client.get(f"/reports/unsubscribe/{token}/").status_code == 404


def test_unsubscribing_after_the_report_was_claimed_still_stops_it(
    schedule, mailoutbox, django_capture_on_commit_callbacks
):
    with time_machine.travel(MONDAY, tick=False), django_capture_on_commit_callbacks() as queued:
        tasks.dispatch_due_reports()  # deliveries claimed, the send task queued
    Unsubscribe.objects.create(schedule=schedule, email="finance@acme.example")

    with time_machine.travel(MONDAY, tick=False):
        for callback in queued:  # the send task runs
            callback()

    assert [email.to for email in mailoutbox] == [["team.lead@outside.example"]]
    skipped = Delivery.objects.get(recipient="finance@acme.example")
    assert (skipped.status, skipped.last_error) == (Delivery.Status.SKIPPED, "Unsubscribed.")
