"""seed_demo builds the documented demo world, with a ledger that keeps every rule."""

import json
from collections import defaultdict
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.db import transaction
from django.db.models import Sum
from django.test import override_settings
from django.utils import timezone

from accounts.models import ApiKey, Membership, Role, Subscription, TeamMembership, User
from credits.management.demo_world import DEMO_KEY_NAME, DEMO_PASSWORD, demo_key_secret
from credits.models import (
    Agent,
    BillingPeriod,
    CreditEvent,
    CreditGrant,
    CreditLimit,
    DailyUsage,
    PlanPrice,
    SubscriptionPrice,
    TeamPeriodUsage,
    ThresholdAlert,
    UserPeriodUsage,
)
from credits.periods import local_date, month_bounds
from credits.pricing import prices_of
from reports.models import Delivery, ReportSchedule

pytestmark = pytest.mark.django_db

SMALL = ("--months", "2", "--scale", "0.05")
# What the autouse fixture in conftest.py sets for each test, here for the whole module.
FAST_PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="module")
def seeded(django_db_setup, django_db_blocker, pinned_clock):
    """Seed once for the whole module (and once more for each pinned moment of the
    ``date_sensitive`` tests), in a transaction rolled back at its end.

    Each test still runs in its own savepoint, so a test that seeds again changes nothing
    for the next one.
    """
    with (
        django_db_blocker.unblock(),
        override_settings(PASSWORD_HASHERS=FAST_PASSWORD_HASHERS),
        transaction.atomic(),
    ):
        out = StringIO()
        call_command("seed_demo", *SMALL, stdout=out)
        yield out.getvalue()
        transaction.set_rollback(True)


def seed(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("seed_demo", *SMALL, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def subscription(name: str) -> Subscription:
    return Subscription.objects.get(name=name)


def test_it_builds_the_documented_subscriptions(seeded):
    acme, labs, globex = (
        subscription("Acme Corp"),
        subscription("Acme Labs"),
        subscription("Globex"),
    )

    assert (acme.plan, acme.timezone, acme.limit_mode) == ("pro", "Europe/Prague", "soft")
    assert (acme.base_allocation, acme.excess_allowance) == (Decimal(60_000), Decimal(15_000))
    assert (labs.plan, labs.timezone, labs.parent) == ("premium", "Europe/Prague", acme)
    assert (globex.plan, globex.timezone, globex.limit_mode) == ("free", "America/New_York", "hard")
    assert globex.base_allocation == Decimal(8_000)
    assert set(acme.enabled_products.values_list("slug", flat=True)) == {
        "ai-agent",
        "expert-agents",
        "writing-assistant",
        "api",
    }
    assert set(globex.enabled_products.values_list("slug", flat=True)) == {
        "ai-agent",
        "writing-assistant",
        "api",
    }
    for each in (acme, labs, globex):
        assert each.projects.count() >= 1
        assert Membership.objects.filter(subscription=each, role=Role.SUBSCRIPTION_ADMIN).exists()
        assert each.teams.filter(team_memberships__isnull=False).exists()
        assert each.api_keys.filter(name=DEMO_KEY_NAME, revoked=False).count() == 1
    assert acme.api_keys.filter(revoked=True).exists()


def test_it_gives_people_every_role(seeded):
    staff = User.objects.get(email="staff@creditdesk.example")
    assert staff.is_superuser and staff.is_staff
    assert not staff.memberships.exists()

    alice = User.objects.get(email="alice@acme.example")
    assert alice.is_staff and not alice.is_superuser  # the admin, through her membership
    assert alice.groups.filter(name="Subscription admins").exists()

    bob = User.objects.get(email="bob@acme.example")
    assert set(
        bob.memberships.values_list("role", "environment__project__name", "environment__name")
    ) == {
        (Role.PROJECT_MANAGER, "Website", "Production"),
        (Role.MEMBER, "Mobile app", "Production"),
    }
    assert not bob.is_staff

    members = Membership.objects.filter(role=Role.MEMBER).values("user").distinct().count()
    assert members >= 5
    assert authenticate(email="carol@acme.example", password=DEMO_PASSWORD)


def test_it_creates_agents_of_several_types_and_models(seeded):
    agents = Agent.objects.all()
    assert {agent.agent_type for agent in agents} >= {"single_task", "multi_step", "chat"}
    assert {agent.model for agent in agents} >= {"gpt-5", "gpt-5-mini", "claude-sonnet-4-5"}
    assert all(agent.created_by for agent in agents)
    for agent in agents:
        assert Membership.objects.filter(
            user=agent.created_by, subscription=agent.subscription
        ).exists()


@pytest.mark.date_sensitive
def test_every_event_belongs_to_the_period_of_its_timestamp(seeded):
    now = timezone.now()
    for each in Subscription.objects.all():
        periods = list(BillingPeriod.objects.filter(subscription=each).order_by("start"))
        assert len(periods) == 3  # two full months and the current one
        for period in periods:
            first_day = local_date(period.start, each.zone)
            assert first_day.day == 1
            bounds = month_bounds(first_day, each.zone)
            assert (period.start, period.end) == (bounds.start, bounds.end)
            events = CreditEvent.objects.filter(period=period)
            # The current period may still be empty: at 00:30 on the 1st nothing ran yet.
            assert events.exists() or period == periods[-1]
            assert not events.exclude(timestamp__gte=period.start, timestamp__lt=period.end)
            assert not events.exclude(subscription=each).exists()
        assert periods[-1].start <= now < periods[-1].end
        assert not CreditEvent.objects.filter(subscription=each, timestamp__gt=now).exists()


def test_the_ledger_looks_like_real_use(seeded):
    events = CreditEvent.objects.all()
    total = events.count()
    failed = events.filter(status=CreditEvent.Status.FAILED).count()
    assert 0 < failed < total * 0.1
    assert events.filter(user__isnull=True, api_key__isnull=False).exists()
    assert not events.filter(user__isnull=True, api_key__isnull=True).exists()
    assert events.filter(agent__isnull=False).exists()
    assert events.filter(latency_ms__isnull=False).exists()
    assert not events.filter(input_tokens=0).exists()

    weekdays = defaultdict(int)
    for timestamp, zone in events.values_list("timestamp", "subscription__timezone"):
        weekdays[local_date(timestamp, Subscription(timezone=zone).zone).weekday() < 5] += 1
    working_day_average, weekend_day_average = weekdays[True] / 5, weekdays[False] / 2
    assert working_day_average > 3 * weekend_day_average


@pytest.mark.date_sensitive
def test_counters_and_rollups_equal_the_ledger(seeded):
    for period in BillingPeriod.objects.all():
        sums = CreditEvent.objects.filter(period=period).aggregate(
            credits=Sum("credits"), excess=Sum("excess_credits")
        )
        assert period.credits_used == (sums["credits"] or 0)
        assert period.excess_used == (sums["excess"] or 0)

    ledger = defaultdict(Decimal)
    runs = defaultdict(int)
    for each in Subscription.objects.all():
        rows = CreditEvent.objects.filter(subscription=each).values_list(
            "timestamp", "product_id", "credits"
        )
        for timestamp, product_id, credits in rows:
            key = (each.pk, local_date(timestamp, each.zone), product_id)
            ledger[key] += credits
            runs[key] += 1
    rollups = DailyUsage.objects.values("subscription_id", "day", "product_id").annotate(
        credits=Sum("credits"), runs=Sum("runs")
    )
    assert {
        (row["subscription_id"], row["day"], row["product_id"]): row["credits"] for row in rollups
    } == ledger
    assert {
        (row["subscription_id"], row["day"], row["product_id"]): row["runs"] for row in rollups
    } == runs

    users = UserPeriodUsage.objects.values_list("period_id", "user_id", "credits_used")
    ledger_users = (
        CreditEvent.objects.filter(user__isnull=False)
        .values_list("period_id", "user_id")
        .annotate(credits=Sum("credits"))
    )
    assert set(users) == set(ledger_users)
    assert TeamPeriodUsage.objects.exists()


def test_the_ledger_respects_every_limit(seeded):
    for period in BillingPeriod.objects.select_related("subscription"):
        each = period.subscription
        if each.limit_mode == Subscription.LimitMode.HARD:
            assert period.credits_used <= each.base_allocation
            assert period.excess_used == 0
        else:
            assert period.credits_used <= each.base_allocation + each.excess_allowance
            assert period.excess_used == max(Decimal(0), period.credits_used - each.base_allocation)

    for limit in CreditLimit.objects.all():
        if limit.user_id:
            used = UserPeriodUsage.objects.filter(
                user=limit.user, period__subscription_id=limit.subscription_id
            )
        else:
            used = TeamPeriodUsage.objects.filter(team=limit.team)
        assert used.exists()
        assert all(row.credits_used <= limit.credits for row in used)


def test_a_second_run_changes_nothing_and_says_so(seeded):
    def snapshot():
        return {
            model.__name__: model.objects.count()
            for model in (
                User,
                Subscription,
                Membership,
                TeamMembership,
                ApiKey,
                Agent,
                BillingPeriod,
                CreditEvent,
                DailyUsage,
                ThresholdAlert,
                ReportSchedule,
                Delivery,
            )
        } | {"credits": CreditEvent.objects.aggregate(total=Sum("credits"))["total"]}

    before = snapshot()

    out, _ = seed()

    assert snapshot() == before
    assert "nothing changed" in out


def test_it_prints_the_demo_logins_and_keys_but_no_other_secret(seeded):
    assert f"password for everyone: {DEMO_PASSWORD}" in seeded
    for email in User.objects.values_list("email", flat=True):
        assert email in seeded
    for name in ("Acme Corp", "Acme Labs", "Globex"):
        assert demo_key_secret(name, DEMO_KEY_NAME) in seeded
    assert demo_key_secret("Acme Corp", "CMS integration") not in seeded


def test_json_lists_logins_subscriptions_environments_and_working_keys(seeded):
    out, err = seed("--json")

    document = json.loads(out)
    assert "nothing changed" in err
    users = {user["email"]: user for user in document["users"]}
    assert set(users) == set(User.objects.values_list("email", flat=True))
    assert users["staff@creditdesk.example"]["is_superuser"]
    bob_roles = {
        (role["role"], role["environment"]["project"], role["environment"]["name"])
        for role in users["bob@acme.example"]["roles"]
    }
    assert bob_roles == {
        ("project_manager", "Website", "Production"),
        ("member", "Mobile app", "Production"),
    }
    for user in document["users"]:
        assert user["password"] == DEMO_PASSWORD
        for role in user["roles"]:
            membership = Membership.objects.get(
                user__email=user["email"],
                subscription_id=role["subscription_id"],
                role=role["role"],
                environment__public_id=role["environment"]["public_id"]
                if role["environment"]
                else None,
            )
            assert membership.subscription.name == role["subscription"]

    assert len(document["subscriptions"]) == 3
    for entry in document["subscriptions"]:
        each = Subscription.objects.get(pk=entry["id"])
        assert (entry["name"], entry["plan"], entry["timezone"]) == (
            each.name,
            each.plan,
            each.timezone,
        )
        assert {env["public_id"] for env in entry["environments"]} == {
            str(public_id)
            for public_id in each.projects.values_list("environments__public_id", flat=True)
        }
        assert ApiKey.objects.get_from_key(entry["api_key"]["secret"]).subscription == each


def test_options_are_checked():
    with pytest.raises(CommandError, match="--months"):
        call_command("seed_demo", "--months", "0", stdout=StringIO())
    with pytest.raises(CommandError, match="scale"):
        call_command("seed_demo", "--scale", "0", stdout=StringIO())


def test_every_plan_has_a_price_and_every_event_its_cost(seeded):
    assert set(PlanPrice.objects.values_list("plan", flat=True)) == set(Subscription.Plan.values)
    labs = subscription("Acme Labs")
    assert SubscriptionPrice.objects.filter(subscription=labs).count() == 1
    acme = subscription("Acme Corp")
    assert sorted(CreditGrant.objects.filter(subscription=acme).values_list("kind", flat=True)) == [
        "bonus",
        "top_up",
    ]
    # Seeded usage predates the grants: base and excess credits, at the price of its time.
    for each in (acme, labs, subscription("Globex")):
        prices = prices_of(each)
        events = CreditEvent.objects.filter(subscription=each)
        assert events.exists() and not events.filter(grant_credits__gt=0).exists()
        rows = events.values_list("timestamp", "credits", "excess_credits", "cost")
        for timestamp, credits, excess, cost in rows.iterator():
            assert cost == prices.at(timestamp).cost(base=credits - excess, excess=excess)
    closed = BillingPeriod.objects.filter(subscription=acme, end__lte=timezone.now()).first()
    rolled_up = DailyUsage.objects.filter(period=closed).aggregate(cost=Sum("cost"))["cost"]
    assert rolled_up == CreditEvent.objects.filter(period=closed).aggregate(c=Sum("cost"))["c"] > 0
