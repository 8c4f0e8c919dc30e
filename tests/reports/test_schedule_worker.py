"""End to end through a real Celery worker on the Redis broker: beat's task, fired twice, and a
redelivered send task produce one report email per recipient."""

import time
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.core import mail
from django.utils import timezone

from config.celery import app
from reports import tasks
from reports.models import Delivery, ReportSchedule
from tests.reports.test_schedule_email import make_schedule

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

DISPATCH = "reports.tasks.dispatch_due_reports"
SEND = "reports.tasks.send_scheduled_report"


def wait_for(condition, timeout=60.0) -> bool:  # generous: CI machines can be busy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)  # polling the worker's progress, not waiting for a fixed time
    return False


def test_a_real_worker_sends_each_report_once(world):
    schedule = make_schedule(world)
    # Due now, whatever the clock says: its latest report fell due after it became active.
    ReportSchedule.objects.filter(pk=schedule.pk).update(
        active_since=timezone.now() - timedelta(days=40)
    )
    finished = []

    def record(sender=None, **kwargs):
        finished.append(sender.name)

    app.control.purge()  # tasks that earlier tests of this run queued without a worker
    task_postrun.connect(record, weak=False)
    try:
        with start_worker(
            app,
            pool="solo",
            queues=["default", "reports"],
            perform_ping_check=False,
            shutdown_timeout=30,
        ):
            tasks.dispatch_due_reports.delay()
            tasks.dispatch_due_reports.delay()  # beat fires twice
            assert wait_for(lambda: finished.count(DISPATCH) == 2 and SEND in finished)
            delivery = Delivery.objects.first()
            tasks.send_scheduled_report.delay(  # the broker redelivers the send task
                schedule.pk, delivery.period_start.isoformat(), delivery.period_end.isoformat()
            )
            assert wait_for(lambda: finished.count(SEND) == 2)
    finally:
        task_postrun.disconnect(record)

    assert sorted(email.to[0] for email in mail.outbox) == [
        "finance@acme.example",
        "team.lead@outside.example",
    ]
    assert set(Delivery.objects.values_list("status", "attempts")) == {("sent", 1)}
