"""Concurrent beats and redelivered send tasks on real PostgreSQL transactions: each recipient
gets one email per period."""

import threading

import pytest
import time_machine
from django.db import connections
from django.utils import timezone

from reports import services, tasks
from reports.models import Delivery
from tests.factories import utc
from tests.reports.test_schedule_email import make_schedule

# serialized_rollback restores what migrations created (the admins group) after a flush.
pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("eager_celery"),
]

THREADS = 8


def at_once(function, count=THREADS) -> list:
    """``function`` called by ``count`` threads released together, each on its own connection."""
    start = threading.Barrier(count)
    results, errors = [], []

    def run():
        try:
            start.wait()
            results.append(function())
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


def test_concurrent_beats_and_redelivered_tasks_send_one_email_per_recipient(world, mailoutbox):
    schedule = make_schedule(world)

    # Eight beats dispatch the Monday report at the same moment; the winner's send task runs.
    with time_machine.travel(utc(2026, 11, 23, 7, 5), tick=False):
        dispatched = at_once(lambda: len(tasks.dispatch_reports(now=timezone.now())))

    assert sorted(dispatched) == [0] * (THREADS - 1) + [1]
    assert sorted(email.to[0] for email in mailoutbox) == [
        "finance@acme.example",
        "team.lead@outside.example",
    ]

    # The next report is claimed, then its send task is delivered eight times at once.
    mailoutbox.clear()
    with time_machine.travel(utc(2026, 11, 30, 7, 5), tick=False):
        (report,) = services.claim_due_reports(now=timezone.now())
        args = (schedule.pk, report.period_start.isoformat(), report.period_end.isoformat())
        sent = at_once(lambda: tasks.send_scheduled_report(*args))

    assert sum(sent) == 2
    assert len(mailoutbox) == 2
    assert set(Delivery.objects.values_list("status", "attempts")) == {("sent", 1)}
    assert Delivery.objects.count() == 4
