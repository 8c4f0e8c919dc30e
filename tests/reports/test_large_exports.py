"""Exports too large to stream are written by a worker and delivered as a signed link.

Every test runs on one pinned clock (``clock``): the link is made and opened at ``NOW``, and
only the expiry test moves past the link's lifetime, so the outcome never depends on today.
"""

from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.test import Client

from tests.factories import utc
from tests.reports.recorder import EventRecorder, logged_in
from tests.reports.test_exports import EXPORT

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 23, 10)


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def usage(world):
    recorder = EventRecorder(world)
    for hour in (1, 2, 3):
        recorder.record(at=utc(2026, 11, 20, hour), credits="1.5")


@pytest.fixture(autouse=True)
def small_threshold(settings, tmp_path):
    settings.LARGE_EXPORT_ROWS = 2
    settings.MEDIA_ROOT = str(tmp_path)
    settings.SITE_URL = "https://creditdesk.example.com"
    settings.CELERY_TASK_ALWAYS_EAGER = True


def link_from(message) -> str:
    line = next(line for line in message.body.splitlines() if line.startswith("https://"))
    return line.removeprefix("https://creditdesk.example.com")


def test_a_large_export_is_emailed_as_a_link_to_the_same_csv(
    world, usage, settings, django_capture_on_commit_callbacks, mailoutbox
):
    client = logged_in(world.admin)
    with django_capture_on_commit_callbacks(execute=True):
        queued = client.get(EXPORT, {"scope": "subscription", "format": "csv"})
    settings.LARGE_EXPORT_ROWS = 1000
    streamed = client.get(EXPORT, {"scope": "subscription", "format": "csv"})

    assert queued.status_code == 202
    assert queued.json()["rows"] == 3
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == [world.admin.email]
    download = client.get(link_from(mailoutbox[0]))
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"".join(streamed.streaming_content)


def test_the_link_needs_no_login_but_expires_and_cannot_be_forged(
    world, usage, settings, clock, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        logged_in(world.admin).get(EXPORT, {"scope": "subscription", "format": "csv"})
    link = link_from(mail.outbox[0])

    assert Client().get(link).status_code == 200
    assert Client().get(link[:-3] + "xx/").status_code == 404
    lifetime = timedelta(days=settings.LARGE_EXPORT_LINK_DAYS)
    clock.move_to(NOW + lifetime - timedelta(minutes=1))
    assert Client().get(link).status_code == 200
    clock.move_to(NOW + lifetime + timedelta(minutes=1))
    assert Client().get(link).status_code == 404


def test_a_member_large_export_only_holds_their_own_rows(
    world, usage, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = logged_in(world.member).get(EXPORT, {"scope": "mine", "format": "csv"})

    assert response.status_code == 202
    body = b"".join(Client().get(link_from(mail.outbox[0])).streaming_content).decode("utf-8-sig")
    assert world.member.email in body
    assert world.admin.email not in body


def test_json_is_never_queued(world, usage):
    response = logged_in(world.admin).get(EXPORT, {"scope": "subscription", "format": "json"})

    assert response.status_code == 200
