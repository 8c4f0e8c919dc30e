"""Report figures equal the ledger's, everywhere: every report, role, filter and timeframe
(whichever rollup serves it, whole months from monthly rows and the days around them from
daily rows), at period and DST edges; p95 within 1% of PostgreSQL's percentile_cont.

Acme is moved to Pacific/Auckland (UTC+12, UTC+13 in summer): far from UTC, with daylight
saving time starting on 27 September and ending on 5 April.
"""

import csv
import io
import random
from collections import defaultdict
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
import time_machine
from django.db import connection
from django.db.models import Sum

from accounts.models import Role, TeamMembership
from credits.models import CreditEvent
from credits.recording import record_adjustment
from tests import factories
from tests.credits.references import percentile_cont
from tests.factories import utc
from tests.reports.recorder import EVENTS_URL, EventRecorder, logged_in, record_november
from tests.reports.slugs import REPORT_SLUGS

pytestmark = pytest.mark.django_db

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
    """About 250 random events from 10 August to 25 October (seeded), plus an adjustment."""
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
    day = utc(2026, 8, 10)
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
    {"timeframe": "last_3_months"},  # August and September whole, then 1 to 25 October
    {"start": "2026-09-27", "end": "2026-10-03"},  # across the start of summer time
    {"start": "2026-08-20", "end": "2026-10-06"},  # days, the whole of September, days
]


def test_every_report_gives_the_same_credits_as_the_ledger(world, generated):
    client = logged_in(world.admin)

    for params in TIMEFRAMES:
        with time_machine.travel(NOW, tick=False):
            totals = {report: report_credits(client, report, **params) for report in REPORT_SLUGS}
            timeframe = client.get("/api/v1/reports/usage-by-user/", params).json()["timeframe"]

        expected = ledger_credits(world.subscription, timeframe["start"], timeframe["end"])
        assert expected != 0
        assert totals == dict.fromkeys(REPORT_SLUGS, expected), params


def test_a_timeframe_ending_today_stays_exact_when_an_event_is_dated_tomorrow(world, auckland):
    """Up to today, a report reads the month's row instead of its days, unless something in
    the month is dated after today (an event recorded ahead of its time): then the days."""
    recorder = EventRecorder(world)
    recorder.record(at=utc(2026, 10, 1, 21), credits="1")  # 2 October, 10:00 in Auckland
    recorder.record(at=utc(2026, 10, 24, 20), credits="2")  # 25 October, 09:00
    client = logged_in(world.admin)

    def totals(**params) -> set[Decimal]:
        return {report_credits(client, report, **params) for report in REPORT_SLUGS}

    with time_machine.travel(NOW, tick=False):
        assert totals(timeframe="last_7_days") == {Decimal(2)}
        assert totals(timeframe="last_30_days") == {Decimal(3)}

    two_minutes_to_midnight = utc(2026, 10, 25, 10, 58)  # 25 October, 23:58
    with time_machine.travel(two_minutes_to_midnight, tick=False):
        ahead = recorder.payload(
            timestamp=(two_minutes_to_midnight + timedelta(minutes=4)).isoformat(), credits="4"
        )
        assert recorder.client.post(EVENTS_URL, ahead, format="json").status_code == 201
        assert totals(timeframe="last_7_days") == {Decimal(2)}  # not 26 October's
        assert totals(timeframe="last_30_days") == {Decimal(3)}
        assert totals(timeframe="this_month") == {Decimal(3)}  # to date
        assert totals(period="2026-10") == {Decimal(7)}


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


# --- Every figure of every report, against the ledger ----------------------------------------

HUNDREDTH, RATE = Decimal("0.01"), Decimal("0.0001")
# The column that names a report's row, and what it groups the ledger by.
GROUPS = {
    "usage-by-user": "user_email",
    "usage-by-agent": "agent_name",
    "usage-by-model": "model",
    "usage-by-product": "product",
    "usage-by-feature": "feature",
    "usage-by-team": "team",
    "usage-by-environment": "environment",
    "usage-by-sub-account": "sub_account",
}


def ratio(numerator, denominator, places: Decimal) -> str | None:
    if not denominator:
        return None
    return str((Decimal(numerator) / Decimal(denominator)).quantize(places, ROUND_HALF_UP))


def expected_rows(report: str, events: list, zone, reader) -> dict[str, dict]:
    """The report's figures computed from ledger rows alone, per row name. An admin sees every
    team's name; anyone else only their own team's, the others are "Other teams"."""
    administers = reader.memberships.filter(role=Role.SUBSCRIPTION_ADMIN).exists()
    own_team = set(TeamMembership.objects.filter(user=reader).values_list("team_id", flat=True))
    teams = {
        user_id: name if administers or team_id in own_team else "Other teams"
        for user_id, team_id, name in TeamMembership.objects.values_list(
            "user_id", "team_id", "team__name"
        )
    }
    name_of = {
        "user_email": lambda e: (
            e.user.email if e.user else (e.api_key.name if e.api_key else "No user or API key")
        ),
        "agent_name": lambda e: e.agent.name if e.agent else "No agent",
        "model": lambda e: e.model or "No model",
        "product": lambda e: e.product.name if e.product else "No product",
        "feature": lambda e: e.feature or "No feature",
        "team": lambda e: teams.get(e.user_id, "No team") if e.user_id else "No team",
        "environment": lambda e: (
            f"{e.environment.project.name} / {e.environment.name}"
            if e.environment
            else "No environment"
        ),
        "sub_account": lambda e: e.subscription.name,
    }[GROUPS[report]]
    groups = defaultdict(list)
    for event in events:
        groups[name_of(event)].append(event)
    rows = {}
    for name, grouped in groups.items():
        runs = [e for e in grouped if e.kind == CreditEvent.Kind.USAGE]
        latencies = [e.latency_ms for e in grouped if e.latency_ms is not None]
        in_sessions = [e for e in runs if e.session_id]
        sessions = {(e.timestamp.astimezone(zone).date(), e.session_id) for e in in_sessions}
        timed = [e.latency_ms for e in runs if e.latency_ms is not None]
        rows[name] = {
            "total_runs": len(runs),
            "credits_consumed": str(sum((e.credits for e in grouped), Decimal("0.0000"))),
            "excess_credits": str(sum((e.excess_credits for e in grouped), Decimal("0.0000"))),
            "input_tokens_total": sum(e.input_tokens for e in grouped),
            "output_tokens_total": sum(e.output_tokens for e in grouped),
            "active_users": len({e.user_id for e in grouped if e.user_id}),
            "avg_latency_ms": ratio(sum(latencies), len(latencies), HUNDREDTH),
            "error_rate": ratio(sum(e.status == "failed" for e in runs), len(runs), RATE),
            "total_sessions": len(sessions),
            "avg_runs_per_session": ratio(len(in_sessions), len(sessions), HUNDREDTH),
            "p95_latency_ms": percentile_cont(timed, Decimal("0.95")) if timed else None,
        }
    return rows


def assert_figures_match(report: str, results: list[dict], expected: dict[str, dict], case):
    group = GROUPS[report]
    reported = {row[group]: row for row in results}
    assert len(reported) == len(results), case
    if report == "usage-by-sub-account":  # every account is a row, with or without usage
        reported = {
            name: row
            for name, row in reported.items()
            if name in expected or row["credits_consumed"] != "0.0000"
        }
    assert set(reported) == set(expected), case
    for name, row in reported.items():
        for column, value in row.items():
            if column not in expected[name]:
                continue
            if column == "p95_latency_ms":
                exact = expected[name][column]
                assert (value is None) == (exact is None), (case, name)
                if exact is not None:
                    error = abs(Decimal(value) - exact)
                    assert error <= exact / 100 + Decimal("0.005"), (case, name, value, exact)
            else:
                assert value == expected[name][column], (case, name, column)


@pytest.fixture
def people(world, generated):
    """Who reads: the admin, the project manager of Production (bob, who has no usage) and
    member1, a member of Production with usage."""
    from accounts.models import User

    return {
        "admin": (world.admin, lambda e: True),
        "manager": (
            world.manager,
            lambda e: e.environment_id == world.environment.pk or e.user_id == world.manager.pk,
        ),
        "member": (
            reader := User.objects.get(email="member1@acme.example"),
            lambda e, reader=reader: e.user_id == reader.pk,
        ),
    }


FILTERS = [
    {},
    {"model": "gpt-5"},
    {"feature": "chat"},
    {"product": "writing-assistant"},
    {"agent_type": "single_task"},
]


def matches(event, filters: dict, team_members: set[int]) -> bool:
    if "model" in filters and event.model != filters["model"]:
        return False
    if "feature" in filters and event.feature != filters["feature"]:
        return False
    if "product" in filters and (not event.product or event.product.slug != filters["product"]):
        return False
    if "agent_type" in filters and (
        not event.agent or event.agent.agent_type != filters["agent_type"]
    ):
        return False
    return "team" not in filters or event.user_id in team_members


@pytest.mark.parametrize("who", ["admin", "manager", "member"])
def test_every_figure_of_every_report_is_the_ledgers(world, generated, people, who):
    reader, sees = people[who]
    client = logged_in(reader)
    zone = world.subscription.zone
    ledger = list(
        CreditEvent.objects.select_related(
            "user", "api_key", "agent", "product", "environment__project", "subscription"
        ).filter(subscription=world.subscription)
    )
    writers = TeamMembership.objects.get(user__email="member0@acme.example").team_id
    team_members = set(
        TeamMembership.objects.filter(team_id=writers).values_list("user_id", flat=True)
    )
    filters_to_try = [*FILTERS, {"team": writers}, {"model": "claude", "agent_type": "single_task"}]
    checked = 0
    for params in [{"timeframe": "last_3_months"}, {"start": "2026-08-20", "end": "2026-10-06"}]:
        for filters in filters_to_try:
            for report in GROUPS:
                if report == "usage-by-sub-account" and who != "admin":
                    continue
                with time_machine.travel(NOW, tick=False):
                    response = client.get(
                        f"/api/v1/reports/{report}/", {**params, **filters, "page_size": 1000}
                    )
                if response.status_code == 400:  # a filter value this reader never used
                    assert who != "admin", (report, filters)
                    continue
                body = response.json()
                first = date.fromisoformat(body["timeframe"]["first_day"])
                last = date.fromisoformat(body["timeframe"]["last_day"])
                events = [
                    e
                    for e in ledger
                    if first <= e.timestamp.astimezone(zone).date() <= last
                    and sees(e)
                    and matches(e, filters, team_members)
                ]
                expected = expected_rows(report, events, zone, reader)
                assert_figures_match(report, body["results"], expected, (who, params, filters))
                checked += 1
    assert checked > 50


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


# The edges inside September 2026 in Auckland, DST change (27 Sep, 02:00 -> 03:00) included.
SEPTEMBER = [
    "1 Sep 00:00 NZST",
    "26 Sep 23:59:59 NZST",
    "27 Sep 00:00 NZST",
    "27 Sep 01:59:59 NZST",
    "27 Sep 03:00 NZDT",
    "27 Sep 23:59:59 NZDT",
    "30 Sep 23:59:59 NZDT",
]


@pytest.mark.parametrize(
    ("params", "included", "start", "end"),
    [
        (
            {"period": "2026-09"},
            SEPTEMBER,
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
    assert Decimal(september.json()["totals"]["Credits"]) == credits_of(edges, *SEPTEMBER)
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


def within_one_percent(reported: str, exact: Decimal) -> bool:
    """The documented precision: within 1% of percentile_cont, given to 0.01 ms."""
    return abs(Decimal(reported) - exact) <= exact / 100 + Decimal("0.005")


@pytest.mark.parametrize("seed", [95, 2026, 7])
def test_p95_is_within_one_percent_of_postgresqls_percentile_cont(world, auckland, seed):
    generator = random.Random(seed)
    latencies = [generator.randint(10, 20_000) for _ in range(generator.randint(2, 400))]
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
        # A member's report reads their own runs from the ledger: percentile_cont itself.
        as_member = logged_in(world.member).get(
            "/api/v1/reports/usage-by-model/", {"timeframe": "this_week"}
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) "
            "FROM credits_creditevent WHERE subscription_id = %s",
            [world.subscription.pk],
        )
        (sql_p95,) = cursor.fetchone()

    exact = percentile_cont(latencies, Decimal("0.95"))
    assert Decimal(repr(sql_p95)).quantize(Decimal("0.01")) == exact.quantize(Decimal("0.01"))
    assert within_one_percent(by_agent.json()["results"][0]["p95_latency_ms"], exact)
    assert within_one_percent(by_model.json()["results"][0]["p95_latency_ms"], exact)
    assert as_member.json()["results"][0]["p95_latency_ms"] == str(exact.quantize(Decimal("0.01")))
    mean = (Decimal(sum(latencies)) / len(latencies)).quantize(Decimal("0.01"))
    assert by_model.json()["results"][0]["avg_latency_ms"] == str(mean)


def test_p95_of_short_latencies_is_exact(world, auckland):
    """Below about 50 ms every histogram bucket is one millisecond."""
    EventRecorder(world).record_batch(
        at=NOW,
        events=[
            {"timestamp": NOW.isoformat(), "latency_ms": latency, "model": "gpt-5"}
            for latency in (0, 3, 7, 12, 12, 30, 41)
        ],
    )

    with time_machine.travel(NOW, tick=False):
        response = logged_in(world.admin).get(
            "/api/v1/reports/usage-by-model/", {"timeframe": "this_week"}
        )

    # percentile_cont(0.95) over 0, 3, 7, 12, 12, 30, 41: 30 + 0.7 * 11
    assert response.json()["results"][0]["p95_latency_ms"] == "37.70"


# --- Credit types ------------------------------------------------------------------------------


def test_credit_types_split_each_members_feature_usage_and_add_up_to_the_balance(world):
    """Acme on a soft limit of 10 credits: alice's 10 credits of chat on 22 November cross it
    after 2, so 8 of them are excess."""
    world.subscription.base_allocation = Decimal(10)
    world.subscription.limit_mode = "soft"
    world.subscription.excess_allowance = Decimal(100)
    world.subscription.save()
    record_november(world)
    client = logged_in(world.admin)

    with time_machine.travel(utc(2026, 11, 25), tick=False):
        report = client.get(
            "/api/v1/reports/usage-by-member-feature-credit-type/", {"timeframe": "this_month"}
        ).json()
        balance = client.get("/api/v1/balance/").json()
        others = {
            slug: report_credits(client, slug, timeframe="this_month")
            for slug in ("usage-by-user", "usage-by-feature")
        }

    rows = [
        (row["user_email"], row["feature"], row["credit_type"], row["credits_consumed"])
        for row in report["results"]
    ]
    assert rows == [
        ("alice@acme.example", "chat", "excess", "8.0000"),
        ("bob@acme.example", "translate", "base", "4.0000"),
        ("carol@acme.example", "chat", "base", "3.7500"),
        ("alice@acme.example", "chat", "base", "2.0000"),
        ("Backend", "No feature", "base", "0.2500"),
    ]
    by_type = defaultdict(Decimal)
    for _, _, credit_type, credits in rows:
        by_type[credit_type] += Decimal(credits)
    assert by_type["excess"] == Decimal(balance["excess_used"])
    assert by_type["base"] + by_type["excess"] == Decimal(balance["used"])
    assert Decimal(report["totals"]["credits_consumed"]) == Decimal(balance["used"])
    assert set(others.values()) == {Decimal(balance["used"])}
