"""Register the periodic tasks in django-celery-beat's database scheduler (idempotent).

Each app states its own in ``PERIODIC_TASKS`` beside the tasks, in its ``tasks`` module (the one
Celery's autodiscovery loads); this command collects them from every installed app. Fixed UTC
intervals, never a local-time crontab: an interval has no DST edge to get wrong
(django-celery-beat issue #134). The tasks themselves work out each subscription's local month.
"""

from importlib import import_module

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils.module_loading import module_has_submodule
from django_celery_beat.models import IntervalSchedule, PeriodicTask


def periodic_tasks() -> list[dict]:
    """Every installed app's ``tasks.PERIODIC_TASKS``: dicts of ``name``, ``task`` (the
    registered task's name), ``every_minutes`` and ``description``."""
    found = []
    for app in apps.get_app_configs():
        if module_has_submodule(app.module, "tasks"):
            found += getattr(import_module(f"{app.name}.tasks"), "PERIODIC_TASKS", [])
    return found


class Command(BaseCommand):
    help = "Create or update the periodic tasks run by celery beat. Safe to run again."

    @transaction.atomic
    def handle(self, *args, **options):
        for spec in periodic_tasks():
            every = spec["every_minutes"]
            schedule = (
                IntervalSchedule.objects.filter(every=every, period=IntervalSchedule.MINUTES)
                .order_by("pk")
                .first()
            ) or IntervalSchedule.objects.create(every=every, period=IntervalSchedule.MINUTES)
            _, created = PeriodicTask.objects.update_or_create(
                name=spec["name"],
                defaults={
                    "task": spec["task"],
                    "interval": schedule,
                    "crontab": None,
                    "solar": None,
                    "clocked": None,
                    "one_off": False,
                    "enabled": True,
                    "args": "[]",
                    "kwargs": "{}",
                    # A run that waited longer than its interval is superseded by the next one.
                    "expire_seconds": every * 60,
                    "description": spec["description"],
                },
            )
            verb = "Created" if created else "Updated"
            self.stdout.write(f"{verb} periodic task {spec['name']!r}: every {every} minutes.")
