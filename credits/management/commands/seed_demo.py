"""Build the demo world and more than a year of credit usage. Idempotent.

A second run finds everything in place, changes nothing and says so. The ledger of a
subscription is seeded only while it is empty (ledger rows are never deleted), so to start
over, remove the demo database (``rm -rf var/`` with the demo stopped).

The ledger is written with ``COPY`` and everything it implies (rollups, period, user, team and key
counters) is derived from it in set-based SQL (``credits.bulk``), so that months of usage load
in seconds and the counters equal the ledger exactly.

The demo shows its emails: the most recent 80% crossing is left unsent and its email queued
when the seed commits, as the recording service queues an alert; other apps add what they
show in the demo (the reports' schedules) on the ``demo_seeded`` signal.
"""

import argparse
import json
import random
import time
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, User
from credits.management.demo_ledger import (
    SeededLedger,
    derive_seeded_ledgers,
    ledger_load,
    seed_ledger,
)
from credits.management.demo_world import (
    DEMO_KEY_NAME,
    DEMO_PASSWORD,
    PEOPLE,
    SUBSCRIPTIONS,
    DemoWorld,
    SubscriptionSpec,
    build_world,
    demo_key_secret,
)
from credits.models import CreditEvent, ThresholdAlert
from credits.recording import queue_alert
from credits.signals import demo_seeded

RANDOM_SEED = "creditdesk-demo"


def scale_argument(value: str) -> Decimal:
    try:
        scale = Decimal(value)
    except InvalidOperation:
        scale = Decimal(0)
    if not 0 < scale <= 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number above 0 and at most 1.")
    return scale


class Command(BaseCommand):
    help = (
        "Create the demo subscriptions, people, API keys and agents, and months of credit "
        "usage. Safe to run again: it only adds what is missing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--months",
            type=int,
            default=13,
            help="Full months of usage before the current one (default: 13).",
        )
        parser.add_argument(
            "--scale",
            type=scale_argument,
            default=Decimal(1),
            help=(
                "Fraction of the runs to simulate, between 0 and 1 (default: 1). Each run then "
                "carries more credits, so monthly totals and limits look the same."
            ),
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help=(
                "Print one JSON document (logins, subscriptions, environments, an API key per "
                "subscription) on stdout; progress goes to stderr."
            ),
        )

    def handle(self, *args, months, scale, as_json, verbosity, **options):
        if months < 1:
            raise CommandError("--months must be at least 1.")
        self.progress = self.stderr if as_json else self.stdout
        self.progress.style_func = None  # progress, not errors: no red on stderr
        self.quiet = verbosity == 0

        started = time.monotonic()
        now = timezone.now()
        with transaction.atomic():
            world = build_world(joined_at=now - timedelta(days=31 * (months + 1)), now=now)
            self._report_created(world)
            seeded = {}
            pending = [spec for spec in SUBSCRIPTIONS if not self._has_ledger(world, spec)]
            if pending:
                with ledger_load():
                    for spec in pending:
                        seeded[spec.name] = self._seed_ledger(
                            world, spec, months=months, scale=scale, now=now
                        )
                    deriving = time.monotonic()
                    derive_seeded_ledgers([world.subscriptions[name] for name in seeded])
                    self._say(
                        "Rollups and counters derived from the ledger, "
                        f"{time.monotonic() - deriving:.1f} s."
                    )
                self._leave_alert_due(seeded)
            events = sum(ledger.events for ledger in seeded.values())
            for message in _responses(
                demo_seeded.send(sender=self.__class__, world=world, now=now)
            ):
                self._say(message)
        if events or any(world.created.values()):
            self._say(f"Demo data ready in {time.monotonic() - started:.1f} s.")
        else:
            self._say("Demo data already in place: nothing changed.")

        if as_json:
            self.stdout.write(json.dumps(demo_document(world), indent=2))
        elif not self.quiet:
            self._print_logins(world)

    def _say(self, message: str) -> None:
        if not self.quiet:
            self.progress.write(message)

    def _report_created(self, world: DemoWorld) -> None:
        created = [f"{count} {what}" for what, count in world.created.items() if count]
        if created:
            self._say("Created " + ", ".join(created) + ".")
        else:
            self._say("Subscriptions, people, teams, API keys and agents already in place.")

    def _has_ledger(self, world: DemoWorld, spec: SubscriptionSpec) -> bool:
        if CreditEvent.objects.filter(subscription=world.subscriptions[spec.name]).exists():
            self._say(f"{spec.name}: credit ledger already seeded.")
            return True
        return False

    def _seed_ledger(
        self, world: DemoWorld, spec: SubscriptionSpec, *, months: int, scale: Decimal, now
    ) -> SeededLedger:
        self._say(f"{spec.name}: simulating {months} months of usage and the current one...")
        started = time.monotonic()
        rng = random.Random(f"{RANDOM_SEED}:{spec.name}")
        seeded = seed_ledger(world, spec, months=months, scale=scale, now=now, rng=rng)
        self._say(
            f"{spec.name}: {seeded.events:,} credit events in {seeded.periods} billing periods "
            f"({seeded.refused:,} runs refused by limits), {time.monotonic() - started:.1f} s."
        )
        return seeded

    def _leave_alert_due(self, seeded: dict[str, SeededLedger]) -> None:
        """The most recent 80% crossing is left unsent, and its email queued at commit."""
        crossings = [
            alert
            for ledger in seeded.values()
            for alert in ledger.crossings
            if alert.threshold == ThresholdAlert.Threshold.ALLOCATION_80
        ]
        if not crossings:
            return
        alert = max(crossings, key=lambda alert: alert.crossed_at)
        ThresholdAlert.objects.filter(pk=alert.pk).update(notified_at=None)
        transaction.on_commit(lambda: queue_alert(alert.pk))
        self._say(
            f"{alert.subscription.name}: the email of its latest 80% alert is queued "
            "(the worker sends it)."
        )

    def _print_logins(self, world: DemoWorld) -> None:
        write = self.stdout.write
        write(f"\nDemo logins (password for everyone: {DEMO_PASSWORD}):")
        width = max(len(person.email) for person in PEOPLE)
        for user in demo_users(world):
            write(f"  {user.email:<{width}}  {describe_roles(user)}")
        write('\nDemo API keys (send "Authorization: Api-Key <key>"):')
        width = max(len(spec.name) for spec in SUBSCRIPTIONS)
        for spec in SUBSCRIPTIONS:
            write(f"  {spec.name:<{width}}  {demo_key_secret(spec.name, DEMO_KEY_NAME)}")


def _responses(responses) -> list[str]:
    """What the receivers of ``demo_seeded`` say they did."""
    return [message for _, said in responses for message in (said or ())]


def demo_users(world: DemoWorld) -> list[User]:
    return [world.users[person.email] for person in PEOPLE]


def describe_roles(user: User) -> str:
    if user.is_superuser:
        return "platform staff (superuser): sees every subscription"
    parts = []
    for membership in user_roles(user):
        if membership.environment is None:
            parts.append(f"{membership.get_role_display()} of {membership.subscription}")
        else:
            where = f"{membership.subscription} / {membership.environment}"
            parts.append(f"{membership.get_role_display().lower()} in {where}")
    return "; ".join(parts)


def user_roles(user: User) -> list[Membership]:
    return list(
        Membership.objects.filter(user=user)
        .select_related("subscription", "environment__project")
        .order_by("pk")  # the order the demo declares them in
    )


def environment_document(environment) -> dict:
    return {
        "public_id": str(environment.public_id),
        "name": environment.name,
        "project": environment.project.name,
    }


def demo_document(world: DemoWorld) -> dict:
    """Everything a script or smoke test needs to log in and call the API."""
    return {
        "users": [
            {
                "email": user.email,
                "name": user.display_name,
                "password": DEMO_PASSWORD,
                "is_superuser": user.is_superuser,
                "roles": [
                    {
                        "role": membership.role,
                        "subscription_id": membership.subscription_id,
                        "subscription": membership.subscription.name,
                        "environment": environment_document(membership.environment)
                        if membership.environment
                        else None,
                    }
                    for membership in user_roles(user)
                ],
            }
            for user in demo_users(world)
        ],
        "subscriptions": [subscription_document(world, spec.name) for spec in SUBSCRIPTIONS],
    }


def subscription_document(world: DemoWorld, name: str) -> dict:
    subscription = world.subscriptions[name]
    secret = demo_key_secret(name, DEMO_KEY_NAME)
    return {
        "id": subscription.pk,
        "name": subscription.name,
        "plan": subscription.plan,
        "timezone": subscription.timezone,
        "limit_mode": subscription.limit_mode,
        "base_allocation": str(subscription.base_allocation),
        "excess_allowance": str(subscription.excess_allowance),
        "parent_id": subscription.parent_id,
        "environments": [
            environment_document(environment)
            for (subscription_name, _), environment in world.environments.items()
            if subscription_name == name
        ],
        "api_key": {"name": DEMO_KEY_NAME, "secret": secret},
    }
