"""End to end through a real Celery worker and the Redis broker: a threshold crossed by an
API call is emailed once, after the charge committed."""

import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.core import mail
from rest_framework.test import APIClient

from config.celery import app
from credits.models import ThresholdAlert
from tests import factories
from tests.credits.conftest import set_allocation

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_real_worker_sends_the_threshold_alert_once(world, product, event_payload, mailoutbox):
    set_allocation(world.subscription, "10")
    _, secret = factories.api_key(world.subscription)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")

    with start_worker(
        app,
        pool="solo",
        queues=["default", "alerts", "reports"],
        perform_ping_check=False,
        shutdown_timeout=30,
    ):
        for _ in range(3):  # 3, 6, 9 credits: the third crosses 80%
            response = client.post("/api/v1/events/", event_payload(credits="3"), format="json")
            assert response.status_code == 201

        assert wait_for(lambda: len(mail.outbox) == 1), "the worker sent no alert"
        time.sleep(0.5)  # a duplicate, if any, would arrive now

    assert len(mail.outbox) == 1
    assert "80%" in mail.outbox[0].subject
    assert mail.outbox[0].to == [world.admin.email]
    assert ThresholdAlert.objects.get().notified_at is not None
