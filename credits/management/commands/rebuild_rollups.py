"""Recompute the rollups and period counters from the ledger (the repair tool)."""

import time

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Subscription
from credits.models import (
    AgentRollup,
    CreditEvent,
    DailyUsage,
    ModelRollup,
    PersonRollup,
    ProductRollup,
    SubscriptionRollup,
)
from credits.rollups import rebuild_rollups


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
            f"{model.objects.filter(subscription=subscription).count():,} {name}"
            for name, model in (
                ("person", PersonRollup),
                ("agent", AgentRollup),
                ("model", ModelRollup),
                ("product", ProductRollup),
                ("subscription", SubscriptionRollup),
            )
        )
        self.stdout.write(
            f"  {events:,} ledger rows -> {rows:,} daily rows; narrow rollups (days and "
            f"months): {narrow} rows; in {elapsed:.1f} s"
        )
