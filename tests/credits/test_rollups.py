"""rebuild_rollups recomputes rollups and period counters from the ledger alone."""

from datetime import date
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Role
from credits.models import (
    BillingPeriod,
    CreditEvent,
    DailyUsage,
    TeamPeriodUsage,
    UserPeriodUsage,
)
from credits.periods import period_bounds
from credits.rollups import rebuild_rollups
from tests import factories
from tests.factories import utc

pytestmark = pytest.mark.django_db


@pytest.fixture
def auckland():
    """A subscription far east of UTC (UTC+13 in the southern summer, UTC+12 in winter)."""
    subscription = factories.SubscriptionFactory(name="Kiwi", timezone="Pacific/Auckland")
    environment = factories.EnvironmentFactory(
        project=factories.ProjectFactory(subscription=subscription)
    )
    member = factories.UserFactory(email="aroha@kiwi.example")
    factories.membership(member, Role.MEMBER, environment=environment)
    return subscription, environment, member


def record(subscription, timestamp, credits, **fields) -> CreditEvent:
    """Write a ledger row straight to the table, into the period containing ``timestamp``."""
    bounds = period_bounds(timestamp, subscription.zone)
    period, _ = BillingPeriod.objects.get_or_create(
        subscription=subscription, start=bounds.start, defaults={"end": bounds.end}
    )
    return CreditEvent.objects.create(
        subscription=subscription,
        period=period,
        timestamp=timestamp,
        credits=Decimal(credits),
        **fields,
    )


def credits_by_day(subscription) -> dict[date, Decimal]:
    return {row.day: row.credits for row in DailyUsage.objects.filter(subscription=subscription)}


@pytest.mark.parametrize(
    ("instant", "local_day"),
    [
        # The last minute of March (NZDT, UTC+13) and the first of April, in the next period.
        (utc(2026, 3, 31, 10, 59), date(2026, 3, 31)),
        (utc(2026, 3, 31, 11, 0), date(2026, 4, 1)),
        # Daylight saving time ends at 03:00 on Sunday 5 April: that day lasts 25 hours.
        (utc(2026, 4, 4, 10, 59), date(2026, 4, 4)),
        (utc(2026, 4, 4, 11, 0), date(2026, 4, 5)),
        (utc(2026, 4, 5, 11, 59), date(2026, 4, 5)),
        (utc(2026, 4, 5, 12, 0), date(2026, 4, 6)),
        # It starts at 02:00 on Sunday 27 September: that day lasts 23 hours.
        (utc(2026, 9, 26, 11, 59), date(2026, 9, 26)),
        (utc(2026, 9, 26, 12, 0), date(2026, 9, 27)),
        (utc(2026, 9, 27, 10, 59), date(2026, 9, 27)),
        (utc(2026, 9, 27, 11, 0), date(2026, 9, 28)),
        # New Year arrives at 11:00 UTC on 31 December.
        (utc(2026, 12, 31, 10, 59), date(2026, 12, 31)),
        (utc(2026, 12, 31, 11, 0), date(2027, 1, 1)),
    ],
)
def test_an_event_counts_on_its_local_day_and_in_its_local_month(auckland, instant, local_day):
    subscription, environment, member = auckland
    event = record(subscription, instant, "2.5", environment=environment, user=member)

    rebuild_rollups(subscription=subscription)

    row = DailyUsage.objects.get(subscription=subscription)
    assert row.day == local_day
    assert row.period == event.period
    period_start = row.period.start.astimezone(subscription.zone)
    assert (period_start.year, period_start.month) == (local_day.year, local_day.month)


def test_a_25_hour_day_collects_all_of_its_events(auckland):
    subscription, environment, member = auckland
    for instant, credits in [
        (utc(2026, 4, 4, 10, 59), "1"),  # Saturday 23:59
        (utc(2026, 4, 4, 11, 0), "2"),  # Sunday 00:00 NZDT
        (utc(2026, 4, 4, 14, 30), "4"),  # 02:30 NZST, after the clocks went back
        (utc(2026, 4, 5, 11, 59), "8"),  # Sunday 23:59 NZST
        (utc(2026, 4, 5, 12, 0), "16"),  # Monday 00:00
    ]:
        record(subscription, instant, credits, environment=environment, user=member)

    rebuild_rollups(subscription=subscription)

    assert credits_by_day(subscription) == {
        date(2026, 4, 4): Decimal(1),
        date(2026, 4, 5): Decimal(14),
        date(2026, 4, 6): Decimal(16),
    }


def test_rows_are_summed_per_day_and_dimensions(auckland):
    subscription, environment, member = auckland
    product = factories.ProductFactory(slug="ai-agent")
    agent = factories.AgentFactory(subscription=subscription, created_by=member)
    api_key, _ = factories.api_key(subscription, name="Nightly sync")
    common = {"environment": environment, "product": product, "model": "gpt-5-mini"}
    by_member = {"user": member, "agent": agent, **common}
    morning, evening = utc(2026, 6, 1, 21), utc(2026, 6, 2, 9)  # 09:00 and 21:00 on 2 June
    record(
        subscription,
        morning,
        "1.2500",
        feature="chat",
        input_tokens=100,
        output_tokens=40,
        latency_ms=800,
        **by_member,
    )
    record(
        subscription,
        evening,
        "0.7500",
        feature="chat",
        input_tokens=60,
        status=CreditEvent.Status.FAILED,
        **by_member,
    )
    record(subscription, evening, "3", feature="summarize", **by_member)
    record(subscription, evening, "5", api_key=api_key, feature="chat", latency_ms=300, **common)

    rebuild_rollups(subscription=subscription)

    rows = DailyUsage.objects.filter(subscription=subscription)
    assert rows.count() == 3
    chat = rows.get(user=member, feature="chat")
    assert (chat.day, chat.agent, chat.model) == (date(2026, 6, 2), agent, "gpt-5-mini")
    assert chat.credits == Decimal("2.0000")
    assert (chat.runs, chat.failed_runs) == (2, 1)
    assert (chat.input_tokens, chat.output_tokens) == (160, 40)
    assert (chat.latency_ms_total, chat.latency_samples) == (800, 1)
    assert chat.last_event_at == evening
    by_key = rows.get(api_key=api_key)
    assert by_key.user is None
    assert (by_key.credits, by_key.runs, by_key.latency_samples) == (Decimal(5), 1, 1)


def test_adjustments_count_as_credits_but_not_as_runs(auckland):
    subscription, environment, member = auckland
    staff = factories.UserFactory(is_superuser=True)
    record(subscription, utc(2026, 6, 2), "10", environment=environment, user=member)
    record(
        subscription,
        utc(2026, 6, 2, 1),
        "-4",
        environment=environment,
        user=member,
        kind=CreditEvent.Kind.ADJUSTMENT,
        reason="Refund for a failed bulk run",
        created_by=staff,
    )

    rebuild_rollups(subscription=subscription)

    row = DailyUsage.objects.get(subscription=subscription)
    assert (row.credits, row.runs) == (Decimal(6), 1)
    assert UserPeriodUsage.objects.get(user=member).credits_used == Decimal(6)


def test_period_user_and_team_counters_are_the_ledger_sums(auckland):
    subscription, environment, member = auckland
    teammate = factories.UserFactory()
    loner = factories.UserFactory()
    for user in (teammate, loner):
        factories.membership(user, Role.MEMBER, environment=environment)
    team = factories.TeamFactory(subscription=subscription)
    factories.team_membership(member, team)
    factories.team_membership(teammate, team)
    api_key, _ = factories.api_key(subscription)
    june, july = utc(2026, 6, 10), utc(2026, 7, 10)
    record(subscription, june, "10", environment=environment, user=member)
    record(subscription, june, "5", environment=environment, user=teammate, excess_credits=2)
    record(subscription, june, "3", environment=environment, user=loner, excess_credits=3)
    record(subscription, june, "7", environment=environment, api_key=api_key, excess_credits=7)
    record(subscription, july, "1", environment=environment, user=member)
    june_period, july_period = BillingPeriod.objects.order_by("start")

    rebuild_rollups(subscription=subscription)

    june_period.refresh_from_db()
    assert (june_period.credits_used, june_period.excess_used) == (Decimal(25), Decimal(12))
    user_usage = {
        (row.period_id, row.user_id): row.credits_used for row in UserPeriodUsage.objects.all()
    }
    assert user_usage == {
        (june_period.pk, member.pk): Decimal(10),
        (june_period.pk, teammate.pk): Decimal(5),
        (june_period.pk, loner.pk): Decimal(3),
        (july_period.pk, member.pk): Decimal(1),
    }
    team_usage = {
        (row.period_id, row.team_id): row.credits_used for row in TeamPeriodUsage.objects.all()
    }
    assert team_usage == {
        (june_period.pk, team.pk): Decimal(15),
        (july_period.pk, team.pk): Decimal(1),
    }


def test_it_repairs_drifted_rollups_and_counters_and_is_repeatable(auckland):
    subscription, environment, member = auckland
    event = record(subscription, utc(2026, 6, 10), "10", environment=environment, user=member)
    empty_period = BillingPeriod.objects.create(
        subscription=subscription,
        start=utc(2026, 7, 31, 12),
        end=utc(2026, 8, 31, 12),
        credits_used=Decimal(99),
    )
    BillingPeriod.objects.filter(pk=event.period_id).update(credits_used=Decimal(3))
    DailyUsage.objects.create(
        subscription=subscription,
        period=event.period,
        day=date(2026, 6, 30),
        credits=Decimal(42),
    )
    UserPeriodUsage.objects.create(period=event.period, user=member, credits_used=Decimal(1))

    rebuild_rollups(subscription=subscription)
    first = list(DailyUsage.objects.values("day", "credits", "runs"))
    rebuild_rollups(subscription=subscription)

    assert list(DailyUsage.objects.values("day", "credits", "runs")) == first
    assert first == [{"day": date(2026, 6, 10), "credits": Decimal(10), "runs": 1}]
    event.period.refresh_from_db()
    empty_period.refresh_from_db()
    assert event.period.credits_used == Decimal(10)
    assert empty_period.credits_used == Decimal(0)
    assert UserPeriodUsage.objects.get().credits_used == Decimal(10)


def test_other_subscriptions_are_left_alone(auckland, world):
    subscription, environment, member = auckland
    record(subscription, utc(2026, 6, 10), "10", environment=environment, user=member)
    record(world.subscription, utc(2026, 6, 10), "4", environment=world.environment)
    rebuild_rollups(subscription=world.subscription)

    rebuild_rollups(subscription=subscription)

    assert DailyUsage.objects.get(subscription=world.subscription).credits == Decimal(4)
    assert BillingPeriod.objects.get(subscription=world.subscription).credits_used == Decimal(4)


def test_the_command_rebuilds_one_or_every_subscription(auckland, world):
    subscription, environment, member = auckland
    record(subscription, utc(2026, 6, 10), "10", environment=environment, user=member)
    record(world.subscription, utc(2026, 6, 10), "4", environment=world.environment)

    out = StringIO()
    call_command("rebuild_rollups", "--subscription", str(subscription.pk), stdout=out)

    assert "Kiwi" in out.getvalue()
    assert "1 ledger rows -> 1 daily rows" in out.getvalue()
    assert not DailyUsage.objects.filter(subscription=world.subscription).exists()

    out = StringIO()
    call_command("rebuild_rollups", stdout=out)

    assert "Kiwi" in out.getvalue()
    assert "Acme" in out.getvalue()
    assert DailyUsage.objects.filter(subscription=world.subscription).exists()


def test_the_command_refuses_an_unknown_subscription(db):
    with pytest.raises(CommandError, match="No subscription with id 999999"):
        call_command("rebuild_rollups", "--subscription", "999999", stdout=StringIO())
