"""Drive the demo as ``bin/demo`` sets it up through its hard, soft, user and team limits.

Run by ``test_demo_configuration.py`` in a process of its own, under
``python -m config.embedded_db`` with no ``DATABASE_URL``: the embedded PostgreSQL, the demo's
settings and the demo's data. Prints one JSON object of findings for the test to judge.
"""

import io
import json
import os
import sys
from decimal import Decimal
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Sum  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import Membership, Subscription, TeamMembership  # noqa: E402
from credits.billing import period_for  # noqa: E402
from credits.models import (  # noqa: E402
    BillingPeriod,
    CreditEvent,
    CreditLimit,
    TeamPeriodUsage,
    UserPeriodUsage,
)

STEP = Decimal("0.0001")
findings = {"engine": connection.vendor, "database_host": "", "statuses": [], "checks": []}
client = Client()
events = 0


def post_event(secret: str, environment: str, credits: Decimal, user: str = "") -> dict:
    global events
    events += 1
    payload = {
        "idempotency_key": f"demo-limits-{events}",
        "environment": environment,
        "product": "ai-agent",
        "credits": str(credits),
    }
    if user:
        payload["user"] = user
    response = client.post(
        "/api/v1/events/",
        payload,
        content_type="application/json",
        headers={"authorization": f"Api-Key {secret}"},
    )
    findings["statuses"].append(response.status_code)
    return {"status": response.status_code, "code": response.json().get("error", {}).get("code")}


def balance(secret: str) -> dict:
    response = client.get("/api/v1/balance/", headers={"authorization": f"Api-Key {secret}"})
    findings["statuses"].append(response.status_code)
    return response.json()


def check(name: str, refused: dict, stored_before: int, **facts) -> None:
    findings["checks"].append(
        {
            "name": name,
            "status": refused["status"],
            "code": refused["code"],
            "stored": CreditEvent.objects.count() - stored_before,
            **facts,
        }
    )


def over_a_member_limit(limit: CreditLimit, keys: dict) -> None:
    """An event one step beyond a user's or a team's remaining room is refused."""
    subscription = limit.subscription
    period = period_for(subscription=subscription, instant=timezone.now())
    if limit.user_id:
        user, counter = limit.user, UserPeriodUsage.objects.filter(user=limit.user, period=period)
    else:
        user = TeamMembership.objects.filter(team=limit.team).first().user
        counter = TeamPeriodUsage.objects.filter(team=limit.team, period=period)
    used = counter.aggregate(used=Sum("credits_used"))["used"] or Decimal(0)
    membership = Membership.objects.filter(
        user=user, subscription=subscription, environment__isnull=False
    )
    environment = str(membership.first().environment.public_id)
    before = CreditEvent.objects.count()
    room = limit.credits - used
    refused = post_event(keys[subscription.pk], environment, room + STEP, user.email)
    check(f"{'user' if limit.user_id else 'team'} limit of {user.email}", refused, before)


def over_the_subscription_cap(subscription: Subscription, secret: str, environment: str) -> None:
    """Filling the subscription to its cap (its allocation, its grants' credits and, in soft
    mode, its excess allowance) is accepted; one step more is refused."""
    state = balance(secret)
    types = state["credit_types"]
    room = Decimal(types["base"]["remaining"]) + Decimal(types["grants"]["remaining"])
    if subscription.limit_mode == Subscription.LimitMode.SOFT:
        room += Decimal(state["excess_remaining"])
    before = CreditEvent.objects.count()
    too_much = post_event(secret, environment, room + STEP)
    check(f"{subscription.name} over its cap", too_much, before)
    filled = post_event(secret, environment, room) if room > 0 else {"status": 201}
    before = CreditEvent.objects.count()
    after_full = post_event(secret, environment, STEP)
    final = balance(secret)
    check(
        f"{subscription.name} when full",
        after_full,
        before,
        filled=filled["status"],
        used=final["used"],
        cap=f"{subscription.credit_cap + Decimal(final['credit_types']['grants']['used']):.4f}",
        excess_used=final["excess_used"],
        excess_allowance=final["excess_allowance"],
    )


def counters_equal_the_ledger() -> list[str]:
    """Each period's and each user's counter against the ledger's sums, in four queries."""
    periods = {p.pk: (p.credits_used, p.excess_used) for p in BillingPeriod.objects.all()}
    ledger = CreditEvent.objects.values("period").annotate(
        credits=Sum("credits"), excess=Sum("excess_credits")
    )
    mismatches = [
        f"period {row['period']}"
        for row in ledger
        if periods[row["period"]] != (row["credits"], row["excess"])
    ]
    spent = {
        (row["period"], row["user"]): row["spent"]
        for row in CreditEvent.objects.filter(user__isnull=False)
        .values("period", "user")
        .annotate(spent=Sum("credits"))
    }
    mismatches += [
        f"user {counter.user_id} in period {counter.period_id}"
        for counter in UserPeriodUsage.objects.all()
        if counter.credits_used != spent.get((counter.period_id, counter.user_id), Decimal(0))
    ]
    return mismatches


call_command("migrate", verbosity=0)
output = io.StringIO()
# A shorter, thinner history than bin/demo's 13 months: the limits, caps and counters checked
# here are the same at any size, and the seed is most of this test's time.
call_command(
    "seed_demo", "--json", "--months", "2", "--scale", "0.1", stdout=output, stderr=io.StringIO()
)
seeded = json.loads(output.getvalue())
keys = {entry["id"]: entry["api_key"]["secret"] for entry in seeded["subscriptions"]}
environments = {
    entry["id"]: entry["environments"][0]["public_id"] for entry in seeded["subscriptions"]
}
findings["database_host"] = connection.get_connection_params()["host"]

for limit in CreditLimit.objects.select_related("subscription", "user", "team").order_by("pk"):
    over_a_member_limit(limit, keys)
for subscription in Subscription.objects.order_by("pk"):
    over_the_subscription_cap(subscription, keys[subscription.pk], environments[subscription.pk])
findings["limit_kinds"] = sorted(
    {*Subscription.objects.values_list("limit_mode", flat=True)}
    | {"user" for _ in CreditLimit.objects.filter(user__isnull=False)[:1]}
    | {"team" for _ in CreditLimit.objects.filter(team__isnull=False)[:1]}
)
findings["mismatches"] = counters_equal_the_ledger()
print(json.dumps(findings))
