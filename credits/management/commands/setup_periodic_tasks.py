"""Register the periodic tasks in django-celery-beat's database scheduler (idempotent)."""

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

# Fixed intervals, never a local-time crontab: a UTC interval has no DST edge to get wrong
# (django-celery-beat issue #134). The tasks themselves work out each subscription's local month.
PERIODIC_TASKS = [
    {
        "name": "Open billing periods",
        "task": "credits.tasks.open_billing_periods",
        "every_minutes": 15,
        "description": "Opens each subscription's new period when its local month starts, "
        "catches up missed months and queues reset notices.",
    },
    {
        "name": "Send unsent alerts",
        "task": "credits.tasks.send_unsent_alerts",
        "every_minutes": 15,
        "description": "Sends threshold alerts and reset notices whose email was never sent.",
    },
    {
        "name": "Create ledger partitions",
        "task": "credits.tasks.create_ledger_partitions",
        "every_minutes": 360,
        "description": "Creates the credit ledger's monthly partitions for the coming months.",
    },
    {
        "name": "Prune session claims",
        "task": "credits.tasks.prune_session_claims",
        "every_minutes": 1440,
        "description": "Deletes the agent session claims of local days that can no longer get "
        "an event (a month after the late-event grace window closes).",
    },
    {
        "name": "Dispatch due reports",
        "task": "reports.tasks.dispatch_due_reports",
        "every_minutes": 5,
        "description": "Hands the scheduled email reports that fell due (in each subscription's "
        "time zone) to the sender, catching up on any missed while beat was down.",
    },
]


class Command(BaseCommand):
    help = "Create or update the periodic tasks run by celery beat. Safe to run again."

    @transaction.atomic
    def handle(self, *args, **options):
        for spec in PERIODIC_TASKS:
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
