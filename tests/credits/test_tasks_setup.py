"""``setup_periodic_tasks`` registers beat's schedule in the database, idempotently."""

from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from config.celery import app

pytestmark = pytest.mark.django_db

TASKS = {
    "Open billing periods": ("credits.tasks.open_billing_periods", 15),
    "Send unsent alerts": ("credits.tasks.send_unsent_alerts", 15),
    "Create ledger partitions": ("credits.tasks.create_ledger_partitions", 360),
    "Prune session claims": ("credits.tasks.prune_session_claims", 1440),
    "Evaluate alert rules": ("credits.tasks.evaluate_alert_rules", 1),
    "Queue due webhooks": ("credits.tasks.queue_due_webhooks", 1),
    "Prune hourly usage": ("credits.tasks.prune_hourly_usage", 1440),
    "Lapse expired grants": ("credits.tasks.lapse_expired_grants", 15),
    "Dispatch due reports": ("reports.tasks.dispatch_due_reports", 5),
}


def setup() -> str:
    out = StringIO()
    call_command("setup_periodic_tasks", stdout=out)
    return out.getvalue()


def test_it_registers_the_tasks_on_utc_intervals():
    app.loader.import_default_modules()  # what a worker does at start: autodiscover tasks

    output = setup()

    assert "Created periodic task 'Open billing periods': every 15 minutes." in output
    tasks = PeriodicTask.objects.order_by("name")
    assert {task.name: (task.task, task.interval.every) for task in tasks} == TASKS
    for task in tasks:
        assert task.interval.period == IntervalSchedule.MINUTES
        assert task.crontab is None  # never a local-time crontab
        assert task.enabled
        assert task.task in app.tasks  # the name beat sends is one a worker knows


def test_running_it_again_changes_nothing():
    setup()
    before = list(PeriodicTask.objects.order_by("pk").values("pk", "interval_id", "task"))

    output = setup()

    assert "Updated periodic task 'Open billing periods'" in output
    assert list(PeriodicTask.objects.order_by("pk").values("pk", "interval_id", "task")) == before
    assert IntervalSchedule.objects.count() == 5  # every 1, 5, 15, 360 and 1440 minutes


def test_it_repairs_a_schedule_edited_by_hand():
    setup()
    crontab = CrontabSchedule.objects.create(minute="0", hour="0", timezone="Europe/Prague")
    PeriodicTask.objects.filter(name="Open billing periods").update(
        interval=None, crontab=crontab, enabled=False
    )

    setup()

    task = PeriodicTask.objects.get(name="Open billing periods")
    assert (task.crontab, task.interval.every, task.enabled) == (None, 15, True)
