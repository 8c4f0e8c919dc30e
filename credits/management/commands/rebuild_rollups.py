"""Recompute the rollups and period counters from the ledger (the repair tool)."""

import time

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Subscription
from credits.models import CreditEvent, DailyUsage
from credits.rollups import ROLLUPS, rebuild_rollups


class Command(BaseCommand):
    help = (
        "Rebuild the usage rollups (daily, and the narrow ones by person, agent, model, "
        "product and subscription) and the period counters from the credit ledger."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--subscription",
            type=int,
            metavar="ID",
            help="Only this subscription (default: every subscription).",
        )

    def handle(self, *args, subscription=None, **options):
        subscriptions = Subscription.objects.order_by("pk")
        if subscription is not None:
            subscriptions = subscriptions.filter(pk=subscription)
            if not subscriptions.exists():
                raise CommandError(f"No subscription with id {subscription}.")
        for each in subscriptions:
            self._rebuild(each)

    def _rebuild(self, subscription: Subscription) -> None:
        self.stdout.write(f"Rebuilding rollups of {subscription} (id {subscription.pk})...")
        started = time.monotonic()
        rebuild_rollups(subscription=subscription)
        elapsed = time.monotonic() - started
        events = CreditEvent.objects.filter(subscription=subscription).count()
        rows = DailyUsage.objects.filter(subscription=subscription).count()
        narrow = ", ".join(
            f"{rollup.model.objects.filter(subscription=subscription).count():,} "
            f"{rollup.model.__name__.removesuffix('Rollup').lower()}"
            for rollup in ROLLUPS
            if rollup.monthly
        )
        self.stdout.write(
            f"  {events:,} ledger rows -> {rows:,} daily rows; narrow rollups (days and "
            f"months): {narrow} rows; in {elapsed:.1f} s"
        )
