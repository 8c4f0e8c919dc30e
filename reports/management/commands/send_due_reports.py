"""Send the scheduled reports that are due, now, in this process (no worker needed).

What beat and the worker do every 5 minutes, synchronously, printing what was sent. Safe to run
at any time and as often as you like: every report is claimed once per period and recipient,
so a report already sent (by this command or by the worker) is not sent again. An email the
mail server refuses stays pending and is retried like any other (``reports.services``).
"""

from django.core.management.base import BaseCommand
from django.utils import timezone

from reports import services, tasks
from reports.models import ReportSchedule


class Command(BaseCommand):
    help = "Send the scheduled email reports that are due now. Safe to run again."

    def add_arguments(self, parser):
        parser.add_argument(
            "--include-past",
            action="store_true",
            help="Also send each schedule's most recent period when it fell due before the "
            "schedule was created or resumed (once, like any other). Handy in the demo: a new "
            "schedule's last week or month is sent at once.",
        )

    def handle(self, *args, include_past=False, **options):
        due = services.claim_due_reports(now=timezone.now(), include_past=include_past)
        if not due:
            self.stdout.write("No reports are due.")
            return
        names = dict(
            ReportSchedule.objects.filter(
                pk__in={report.schedule_id for report in due}
            ).values_list("pk", "name")
        )
        for report in due:
            result = services.send_report(
                schedule_id=report.schedule_id,
                period_start=report.period_start,
                period_end=report.period_end,
            )
            label = f"{names.get(report.schedule_id, report.schedule_id)!s} "
            label += f"({report.period_start} to {report.period_end})"
            if result.sent:
                self.stdout.write(f"Sent {label} to {', '.join(result.sent)}.")
            if result.failed:
                self.stdout.write(f"Could not send {label} to {', '.join(result.failed)}.")
            if result.retry_in is not None:
                # SMTP refused some: the worker retries with the usual backoff (and the periodic
                # dispatch does, should that task be lost).
                tasks.queue_report(report, countdown=result.retry_in)
                self.stdout.write(
                    f"Could not send {label} yet (SMTP error); retrying in {result.retry_in} s."
                )
            if result.skipped:
                self.stdout.write(f"Skipped {label} for {', '.join(result.skipped)}.")
            if not (result.sent or result.failed or result.skipped or result.retry_in):
                self.stdout.write(f"Nothing left to send for {label}.")
