"""rebuild_rollups recomputes rollups and period counters from the ledger alone; the rollup
picker reads the narrowest rollup that holds what a report needs."""

from datetime import date, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Role
from credits.models import (
    AgentRollup,
    AgentSessionDay,
    BillingPeriod,
    CreditEvent,
    DailyUsage,
    ModelRollup,
    PersonRollup,
    ProductRollup,
    SubscriptionRollup,
    TeamPeriodUsage,
    UserPeriodUsage,
)
from credits.periods import period_bounds
from credits.rollups import (
    covering,
    latency_bucket,
    narrowest_rollup,
    rebuild_rollups,
)
from tests import factories
from tests.factories import utc

# On the real clock: also run at each pinned moment (tests/conftest.py).
pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]


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


def either_side_of(midnight, day: date) -> list:
    """The last minute of the local day before ``day``, and the first minute of ``day``, which
    starts at ``midnight`` (UTC)."""
    return [(midnight - timedelta(minutes=1), day - timedelta(days=1)), (midnight, day)]


@pytest.mark.parametrize(
    ("instant", "local_day"),
    [
        # April starts at 11:00 UTC on 31 March (NZDT, UTC+13), in the next period.
        *either_side_of(utc(2026, 3, 31, 11), date(2026, 4, 1)),
        # Daylight saving time ends at 03:00 on Sunday 5 April: that day lasts 25 hours.
        *either_side_of(utc(2026, 4, 4, 11), date(2026, 4, 5)),
        *either_side_of(utc(2026, 4, 5, 12), date(2026, 4, 6)),
        # It starts at 02:00 on Sunday 27 September: that day lasts 23 hours.
        *either_side_of(utc(2026, 9, 26, 12), date(2026, 9, 27)),
        *either_side_of(utc(2026, 9, 27, 11), date(2026, 9, 28)),
        # New Year arrives at 11:00 UTC on 31 December.
        *either_side_of(utc(2026, 12, 31, 11), date(2027, 1, 1)),
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
    assert (
        "1 ledger rows -> 1 daily rows; narrow rollups (days and months): 2 model, 2 agent, "
        "2 product, 2 person, 2 subscription rows"
    ) in out.getvalue()
    assert not DailyUsage.objects.filter(subscription=world.subscription).exists()

    out = StringIO()
    call_command("rebuild_rollups", stdout=out)

    assert "Kiwi" in out.getvalue()
    assert "Acme" in out.getvalue()
    assert DailyUsage.objects.filter(subscription=world.subscription).exists()


def test_the_command_refuses_an_unknown_subscription(db):
    with pytest.raises(CommandError, match="No subscription with id 999999"):
        call_command("rebuild_rollups", "--subscription", "999999", stdout=StringIO())


def test_narrow_rollups_keep_a_row_per_local_day_and_per_local_month(auckland):
    subscription, environment, member = auckland
    agent = factories.AgentFactory(subscription=subscription, created_by=member)
    product = factories.ProductFactory(slug="ai-agent")
    common = {"environment": environment, "user": member, "product": product, "agent": agent}
    # 23:30 on 31 March and 00:30 on 1 April in Auckland (NZDT): two days, two months.
    record(subscription, utc(2026, 3, 31, 10, 30), "1", model="a", latency_ms=90, **common)
    record(subscription, utc(2026, 3, 31, 11, 30), "2", model="a", session_id="s", **common)
    record(subscription, utc(2026, 4, 2), "4", model="b", session_id="s", latency_ms=90, **common)
    record(
        subscription,
        utc(2026, 4, 3),
        "-0.5",
        kind=CreditEvent.Kind.ADJUSTMENT,
        reason="Refund",
        **common,
    )

    rebuild_rollups(subscription=subscription)

    def credits(rollup, **key):
        rows = rollup.objects.filter(subscription=subscription, **key)
        return {(row.grain, row.day): row.credits for row in rows}

    assert credits(PersonRollup, user=member) == {
        ("day", date(2026, 3, 31)): Decimal(1),
        ("day", date(2026, 4, 1)): Decimal(2),
        ("day", date(2026, 4, 2)): Decimal(4),
        ("day", date(2026, 4, 3)): Decimal("-0.5"),
        ("month", date(2026, 3, 1)): Decimal(1),
        ("month", date(2026, 4, 1)): Decimal("5.5"),
    }
    assert credits(AgentRollup, agent=agent) == credits(PersonRollup, user=member)
    assert credits(ModelRollup, model="b", grain="month") == {
        ("month", date(2026, 4, 1)): Decimal(4)
    }
    assert credits(SubscriptionRollup, product=product, model="", grain="day") == {
        ("day", date(2026, 4, 3)): Decimal("-0.5")
    }
    april = AgentRollup.objects.get(subscription=subscription, grain="month", day="2026-04-01")
    # Session s ran on the 1st and the 2nd: once on each day. The adjustment is not a run.
    assert (april.runs, april.session_runs, april.sessions) == (2, 2, 2)
    assert april.latency_histogram == {str(latency_bucket(90)): 1}
    assert AgentSessionDay.objects.filter(subscription=subscription).count() == 2


def test_the_picker_reads_the_narrowest_rollup_that_holds_what_a_report_needs():
    def pick(*dimensions, admin=True):
        return narrowest_rollup(dimensions, whole_subscriptions=admin).model

    assert pick("model") is ModelRollup
    assert pick("agent") is AgentRollup
    assert pick("user", "api_key") is PersonRollup
    assert pick("environment", "user") is PersonRollup
    assert pick("agent", "model") is SubscriptionRollup  # by agent, filtered by model
    assert pick("product", "feature") is ProductRollup
    assert pick("product") is ProductRollup
    # By environment (or project) and product: a year reads twelve monthly rows per key.
    assert pick("environment", "product") is ProductRollup
    assert pick("environment", "feature") is ProductRollup
    assert pick("environment") is ProductRollup
    assert pick("product", "agent") is SubscriptionRollup
    assert pick("agent", "user") is DailyUsage  # by agent, filtered by team
    # Anyone who sees less than whole subscriptions needs environment and user to be scoped.
    assert pick("user", "api_key", admin=False) is PersonRollup
    assert pick("model", admin=False) is DailyUsage
    assert pick("agent", admin=False) is DailyUsage
    assert pick("environment", "product", admin=False) is DailyUsage
    # Every dimension: the widest daily rollup, never the hourly one (the usage API's alone).
    everything = ("environment", "user", "api_key", "product", "agent", "model", "feature")
    assert pick(*everything) is pick(*everything, admin=False) is DailyUsage
    with pytest.raises(ValueError, match="team"):
        pick("team")


@pytest.mark.parametrize(
    ("first_day", "last_day", "months", "days"),
    [
        # The last 12 months on 23 November: eleven whole months, then 23 days.
        ("2025-12-01", "2026-11-23", ("2025-12-01", "2026-11-01"), [("2026-11-01", "2026-11-23")]),
        # A whole month, and the days around one.
        ("2026-10-01", "2026-10-31", ("2026-10-01", "2026-11-01"), []),
        (
            "2026-08-20",
            "2026-10-06",
            ("2026-09-01", "2026-10-01"),
            [("2026-08-20", "2026-08-31"), ("2026-10-01", "2026-10-06")],
        ),
        # Across a year end without a whole month; a single day.
        ("2026-12-15", "2027-01-14", None, [("2026-12-15", "2027-01-14")]),
        ("2026-02-28", "2026-02-28", None, [("2026-02-28", "2026-02-28")]),
        # February of a leap year, whole.
        ("2028-02-01", "2028-02-29", ("2028-02-01", "2028-03-01"), []),
    ],
)
def test_timeframes_read_whole_months_from_monthly_rows_and_the_rest_from_daily_rows(
    auckland, first_day, last_day, months, days
):
    subscription, _, member = auckland
    rollup = narrowest_rollup({"user"}, whole_subscriptions=True)
    start, end = date.fromisoformat(first_day), date.fromisoformat(last_day)
    day = date(start.year, start.month, 1) - timedelta(days=40)
    while day <= end + timedelta(days=40):
        for grain in ("day", "month") if day.day == 1 else ("day",):
            PersonRollup.objects.create(
                subscription=subscription, grain=grain, day=day, user=member, credits=1
            )
        day += timedelta(days=1)

    read = PersonRollup.objects.filter(covering(rollup, start, end))

    expected_months = set()
    if months:
        month = date.fromisoformat(months[0])
        while month < date.fromisoformat(months[1]):
            expected_months.add(month)
            month = (month + timedelta(days=32)).replace(day=1)
    expected_days = set()
    for first, last in days:
        day = date.fromisoformat(first)
        while day <= date.fromisoformat(last):
            expected_days.add(day)
            day += timedelta(days=1)
    assert set(read.filter(grain="month").values_list("day", flat=True)) == expected_months
    assert set(read.filter(grain="day").values_list("day", flat=True)) == expected_days


@pytest.mark.parametrize(
    ("first_day", "last_day", "months", "days"),
    [
        # The last month has nothing after its last day: its monthly row stands for it.
        ("2026-08-20", "2026-10-06", {"2026-09-01", "2026-10-01"}, ("2026-08-20", "2026-08-31")),
        ("2026-10-01", "2026-10-06", {"2026-10-01"}, None),
        # A range that starts inside the month still reads its days.
        ("2026-10-02", "2026-10-06", set(), ("2026-10-02", "2026-10-06")),
    ],
)
def test_a_month_with_nothing_after_the_last_day_is_read_from_its_monthly_row(
    first_day, last_day, months, days
):
    rollup = narrowest_rollup({"user"}, whole_subscriptions=True)
    read = covering(
        rollup, date.fromisoformat(first_day), date.fromisoformat(last_day), month_ends_there=True
    )

    rows = []
    day = date(2026, 7, 1)
    while day < date(2026, 12, 1):
        rows += [("day", day)] + ([("month", day)] if day.day == 1 else [])
        day += timedelta(days=1)
    subscription = factories.SubscriptionFactory()
    PersonRollup.objects.bulk_create(
        PersonRollup(subscription=subscription, grain=grain, day=day) for grain, day in rows
    )
    selected = PersonRollup.objects.filter(read, subscription=subscription)

    assert {str(d) for d in selected.filter(grain="month").values_list("day", flat=True)} == months
    expected_days = set()
    if days:
        day, last = date.fromisoformat(days[0]), date.fromisoformat(days[1])
        while day <= last:
            expected_days.add(day)
            day += timedelta(days=1)
    assert set(selected.filter(grain="day").values_list("day", flat=True)) == expected_days
