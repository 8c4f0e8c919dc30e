"""Archive old months of the credit ledger: detach, export to storage, drop."""

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from credits.partitions import archive_ledger_partitions, is_partitioned


def month(value: str) -> date:
    try:
        year, month_number = (int(part) for part in value.split("-"))
        return date(year, month_number, 1)
    except ValueError:
        raise CommandError(f"{value!r} is not a month like 2025-01.") from None


class Command(BaseCommand):
    help = (
        "Detach every monthly ledger partition that ends on or before the 1st of --before, "
        "write it to storage (ledger-archive/<partition>.csv.gz) and drop it. Rollups and "
        "billing periods are kept. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--before", required=True, type=month, help="YYYY-MM (exclusive)")
        parser.add_argument("--dry-run", action="store_true", help="List what would be archived.")

    def handle(self, *args, before, dry_run, **options):
        if not is_partitioned():
            raise CommandError("The ledger is not partitioned here (PostgreSQL only).")
        archived = archive_ledger_partitions(
            before=before,
            dry_run=dry_run,
            progress=lambda done: self.stdout.write(
                f"Archived {done.partition}: {done.rows} rows to {done.path}"
            ),
        )
        if dry_run:
            for item in archived:
                self.stdout.write(f"Would archive {item.partition}: {item.rows} rows")
        verb = "Would archive" if dry_run else "Archived"
        self.stdout.write(self.style.SUCCESS(f"{verb} {len(archived)} partition(s)."))
