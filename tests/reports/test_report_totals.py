"""Totals agree everywhere, at period and DST edges, and p95 is PostgreSQL's percentile_cont.

Acme is moved to Pacific/Auckland (UTC+12, UTC+13 in summer): far from UTC, with daylight
saving time starting on 27 September and ending on 5 April.
"""

import csv
import io
import random
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.db.models import Sum

from accounts.models import Role
from credits.models import CreditEvent
from credits.recording import record_adjustment
from tests import factories
from tests.factories import utc
from tests.reports.recorder import EventRecorder, logged_in

pytestmark = pytest.mark.django_db

REPORTS = [
    "usage-by-user",
    "usage-by-agent",
    "usage-by-model",
    "usage-by-product",
    "usage-by-feature",
    "usage-by-team",
    "usage-by-environment",
    "usage-by-sub-account",
]
# Sunday 25 October 2026, 10:00 in Auckland.
NOW = utc(2026, 10, 24, 21)


@pytest.fixture
def auckland(world):
    world.subscription.timezone = "Pacific/Auckland"
    world.subscription.base_allocation = Decimal(100_000)
    world.subscription.save()
    return world.subscription


def report_credits(client, report: str, **params) -> Decimal:
    response = client.get(f"/api/v1/reports/{report}/", params)
    assert response.status_code == 200, response.json()
    body = response.json()
    rows_total = sum((Decimal(row["credits_consumed"]) for row in body["results"]), Decimal(0))
    assert Decimal(body["totals"]["credits_consumed"]) == rows_total, report
    return rows_total


def ledger_credits(subscription, start, end) -> Decimal:
    events = CreditEvent.objects.filter(
        subscription=subscription, timestamp__gte=start, timestamp__lt=end
    )
    return events.aggregate(total=Sum("credits"))["total"] or Decimal(0)


def random_event(generator, day, members, world) -> dict:
    member = generator.choice(members)
    environment = (world.other_environment, world.environment)[members.index(member) % 2]
    return {
        "timestamp": (day + timedelta(seconds=generator.randint(0, 86_399))).isoformat(),
        "environment": str(environment.public_id),
        "user": generator.choice([member.email, None]),
        "product": generator.choice(["ai-agent", "writing-assistant"]),
        "feature": generator.choice(["chat", "summary", ""]),
        "agent": generator.choice(["Support bot", "Translator", None]),
        "model": generator.choice(["gpt-5", "gpt-5-mini", "claude"]),
        "credits": str(Decimal(generator.randint(1, 99_999)) / 10_000),
        "latency_ms": generator.choice([None, generator.randint(50, 9000)]),
        "status": generator.choice(["succeeded", "succeeded", "failed"]),
        "session_id": generator.choice(["", "a", "b", "c"]),
    }


@pytest.fixture
def generated(world, auckland):
    """About 150 random events in September and October (seeded), plus an adjustment."""
    members = [factories.UserFactory(email=f"member{n}@acme.example") for n in range(6)]
    for n, member in enumerate(members):
        environment = world.environment if n % 2 else world.other_environment
        factories.membership(member, Role.MEMBER, environment=environment)
    team = factories.TeamFactory(subscription=auckland, name="Writers")
    for member in members[:3]:
        factories.team_membership(member, team)
    writing = factories.ProductFactory(slug="writing-assistant", name="Writing assistant")
    writing.enabled_for.add(auckland)

    recorder = EventRecorder(world)
    generator = random.Random(20261025)
    day = utc(2026, 9, 1)
    while day < NOW:
        events = [
            random_event(generator, day, members, world) for _ in range(generator.randint(0, 6))
        ]
        if events:
            recorder.record_batch(at=day + timedelta(days=1), events=events)
        day += timedelta(days=1)
    with time_machine.travel(utc(2026, 10, 20), tick=False):
        record_adjustment(
            subscription=auckland,
            credits=Decimal("-3.3333"),
            reason="Refund of a failed batch",
            created_by=world.admin,
            environment=world.environment,
        )
    return recorder


TIMEFRAMES = [
    {"timeframe": "this_month"},
    {"timeframe": "last_month"},
    {"timeframe": "last_7_days"},
    {"timeframe": "last_30_days"},
    {"timeframe": "last_week"},
    {"timeframe": "last_3_months"},
    {"start": "2026-09-27", "end": "2026-10-03"},  # across the start of summer time
]


def test_every_report_gives_the_same_credits_as_the_ledger(world, generated):
    client = logged_in(world.admin)

    for params in TIMEFRAMES:
        with time_machine.travel(NOW, tick=False):
            totals = {report: report_credits(client, report, **params) for report in REPORTS}
            timeframe = client.get("/api/v1/reports/usage-by-user/", params).json()["timeframe"]

        expected = ledger_credits(world.subscription, timeframe["start"], timeframe["end"])
        assert expected != 0
        assert totals == dict.fromkeys(REPORTS, expected), params


def test_this_month_equals_the_balance_and_the_subscription_export(world, generated):
    client = logged_in(world.admin)

    with time_machine.travel(NOW, tick=False):
        report = report_credits(client, "usage-by-product", timeframe="this_month")
        used = Decimal(client.get("/api/v1/balance/").json()["used"])
        export = client.get("/api/v1/exports/credit-usage/", {"scope": "subscription"})
        export_csv = client.get(
            "/api/v1/exports/credit-usage/", {"scope": "subscription", "format": "csv"}
        )

    rows = list(csv.DictReader(io.StringIO(b"".join(export_csv.streaming_content).decode())))
    assert report == used == Decimal(export.json()["totals"]["Credits"])
    assert sum(Decimal(row["Credits"]) for row in rows) == used
    assert "-3.3333" in [row["Credits"] for row in rows]


def test_members_and_managers_totals_are_their_share(world, generated):
    with time_machine.travel(NOW, tick=False):
        member = report_credits(logged_in(world.member), "usage-by-user", timeframe="this_month")
        manager = report_credits(logged_in(world.manager), "usage-by-model", timeframe="this_month")
        timeframe = (
            logged_in(world.admin)
            .get("/api/v1/reports/usage-by-user/", {"timeframe": "this_month"})
            .json()["timeframe"]
        )

    events = CreditEvent.objects.filter(
        timestamp__gte=timeframe["start"], timestamp__lt=timeframe["end"]
    )
    assert member == (events.filter(user=world.member).aggregate(t=Sum("credits"))["t"] or 0)
    managed = events.filter(environment=world.environment) | events.filter(user=world.manager)
    assert manager == managed.aggregate(t=Sum("credits"))["t"]


# --- Period and DST edges ------------------------------------------------------------------


@pytest.fixture
def edges(world, auckland):
    """One credit at each edge, worth a distinct power of two so each sum names its events."""
    recorder = EventRecorder(world)
    moments = {
        "31 Aug 23:59:59 NZST": utc(2026, 8, 31, 11, 59, 59),
        "1 Sep 00:00 NZST": utc(2026, 8, 31, 12),
        "26 Sep 23:59:59 NZST": utc(2026, 9, 26, 11, 59, 59),
        "27 Sep 00:00 NZST": utc(2026, 9, 26, 12),
        "27 Sep 01:59:59 NZST": utc(2026, 9, 26, 13, 59, 59),
        "27 Sep 03:00 NZDT": utc(2026, 9, 26, 14),  # the clocks jumped from 02:00
        "27 Sep 23:59:59 NZDT": utc(2026, 9, 27, 10, 59, 59),
        "30 Sep 23:59:59 NZDT": utc(2026, 9, 30, 10, 59, 59),
        "1 Oct 00:00 NZDT": utc(2026, 9, 30, 11),
    }
    credits = {}
    for power, (name, moment) in enumerate(moments.items()):
        credits[name] = Decimal(2**power)
        recorder.record(at=moment, credits=str(credits[name]))
    return credits


def credits_of(edges, *names) -> Decimal:
    return sum((edges[name] for name in names), Decimal(0))


@pytest.mark.parametrize(
    ("params", "included", "start", "end"),
    [
        (
            {"period": "2026-09"},
            [
                "1 Sep 00:00 NZST",
                "26 Sep 23:59:59 NZST",
                "27 Sep 00:00 NZST",
                "27 Sep 01:59:59 NZST",
                "27 Sep 03:00 NZDT",
                "27 Sep 23:59:59 NZDT",
                "30 Sep 23:59:59 NZDT",
            ],
            "2026-08-31T12:00:00Z",
            "2026-09-30T11:00:00Z",
        ),
        (
            {"start": "2026-09-27", "end": "2026-09-27"},  # 23 hours long
            [
                "27 Sep 00:00 NZST",
                "27 Sep 01:59:59 NZST",
                "27 Sep 03:00 NZDT",
                "27 Sep 23:59:59 NZDT",
            ],
            "2026-09-26T12:00:00Z",
            "2026-09-27T11:00:00Z",
        ),
        ({"timeframe": "this_month"}, ["1 Oct 00:00 NZDT"], "2026-09-30T11:00:00Z", None),
        ({"period": "2026-08"}, ["31 Aug 23:59:59 NZST"], "2026-07-31T12:00:00Z", None),
    ],
)
def test_edges_fall_on_local_days(world, edges, params, included, start, end):
    client = logged_in(world.admin)

    with time_machine.travel(NOW, tick=False):
        response = client.get("/api/v1/reports/usage-by-environment/", params)

    body = response.json()
    assert Decimal(body["totals"]["credits_consumed"]) == credits_of(edges, *included)
    assert body["timeframe"]["start"] == start
    if end:
        assert body["timeframe"]["end"] == end


def test_the_export_covers_the_current_period_in_local_time(world, edges):
    with time_machine.travel(utc(2026, 9, 30, 10, 59, 59), tick=False):  # last second of Sep
        september = logged_in(world.admin).get(
            "/api/v1/exports/credit-usage/", {"scope": "subscription"}
        )
    with time_machine.travel(utc(2026, 9, 30, 11), tick=False):  # 1 October has begun
        october = logged_in(world.admin).get(
            "/api/v1/exports/credit-usage/", {"scope": "subscription"}
        )

    assert september.json()["timeframe"]["start"] == "2026-08-31T12:00:00Z"
    assert Decimal(september.json()["totals"]["Credits"]) == credits_of(
        edges,
        "1 Sep 00:00 NZST",
        "26 Sep 23:59:59 NZST",
        "27 Sep 00:00 NZST",
        "27 Sep 01:59:59 NZST",
        "27 Sep 03:00 NZDT",
        "27 Sep 23:59:59 NZDT",
        "30 Sep 23:59:59 NZDT",
    )
    assert [row["Timestamp"] for row in october.json()["results"]] == ["2026-09-30T11:00:00Z"]


def test_a_day_that_is_25_hours_long_when_daylight_saving_time_ends(world, auckland):
    recorder = EventRecorder(world)
    recorder.record(at=utc(2026, 4, 4, 11), credits="1")  # 00:00 NZDT on 5 April
    recorder.record(at=utc(2026, 4, 5, 11, 59, 59), credits="2")  # 23:59:59 NZST on 5 April
    recorder.record(at=utc(2026, 4, 5, 12), credits="4")  # 00:00 NZST on 6 April

    with time_machine.travel(utc(2026, 4, 7), tick=False):
        response = logged_in(world.admin).get(
            "/api/v1/reports/usage-by-product/", {"start": "2026-04-05", "end": "2026-04-05"}
        )

    assert response.json()["totals"]["credits_consumed"] == "3.0000"


# --- p95 -----------------------------------------------------------------------------------


def percentile_cont(values: list[int], fraction: Decimal) -> Decimal:
    """The SQL standard's continuous percentile: linear interpolation between ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def test_p95_is_postgresqls_percentile_cont(world, auckland):
    generator = random.Random(95)
    latencies = [generator.randint(10, 20_000) for _ in range(57)]
    EventRecorder(world).record_batch(
        at=NOW,
        events=[
            {"timestamp": NOW.isoformat(), "latency_ms": latency, "model": "gpt-5"}
            for latency in latencies
        ]
        + [{"timestamp": NOW.isoformat(), "latency_ms": None, "model": "gpt-5"}],
    )

    with time_machine.travel(NOW, tick=False):
        client = logged_in(world.admin)
        by_agent = client.get("/api/v1/reports/usage-by-agent/", {"timeframe": "this_week"})
        by_model = client.get("/api/v1/reports/usage-by-model/", {"timeframe": "this_week"})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) "
            "FROM credits_creditevent WHERE subscription_id = %s",
            [world.subscription.pk],
        )
        (sql_p95,) = cursor.fetchone()

    expected = percentile_cont(latencies, Decimal("0.95")).quantize(Decimal("0.01"))
    assert Decimal(repr(sql_p95)).quantize(Decimal("0.01")) == expected
    assert by_agent.json()["results"][0]["p95_latency_ms"] == str(expected)
    assert by_model.json()["results"][0]["p95_latency_ms"] == str(expected)
    mean = (Decimal(sum(latencies)) / len(latencies)).quantize(Decimal("0.01"))
    assert by_model.json()["results"][0]["avg_latency_ms"] == str(mean)
