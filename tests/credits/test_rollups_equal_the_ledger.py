"""Every rollup, counter and report equals the ledger, summed here in plain SQL.

The expectations never go through ``credits.rollups``: each is a ``GROUP BY`` over
``credits_creditevent`` written in this file (only the column names come from
``credits.ledger_columns``), so a mistake shared by the three derivations (recording,
``rebuild_rollups``, the bulk load) still fails. The events are a seeded mix sent
through the API and the adjustment service: three subscriptions in three time zones (one a
sub-account), people in and out of teams, API keys acting alone, agents, models, products,
features, sessions, failures and latencies, over local days across a month boundary.
"""

import ast
import random
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from accounts.models import Role, Subscription
from credits.bulk import derive_from_ledger
from credits.ledger_columns import DIMENSIONS, ROLLUP_SUMS
from credits.models import Product
from credits.recording import record_adjustment
from tests import factories
from tests.factories import utc
from tests.reports.recorder import EventRecorder, logged_in

pytestmark = pytest.mark.django_db

APPS = ("accounts", "core", "credits", "reports")
START = utc(2026, 10, 24, 12)  # 25 October, 01:00 in Auckland
DAYS = 12  # through the 1st of November in every zone
NARROW = {
    "credits_personrollup": ("environment_id", "user_id", "api_key_id"),
    "credits_productrollup": ("product_id", "feature", "environment_id"),
    "credits_agentrollup": ("agent_id",),
    "credits_modelrollup": ("model",),
    "credits_subscriptionrollup": ("product_id", "agent_id", "model", "feature"),
}
# What each rollup row sums: the bulk writers' columns and the money the ledger carries.
SUMMED_COLUMNS = (*ROLLUP_SUMS[:2], "grant_credits", "cost", *ROLLUP_SUMS[2:])
# Each of ``SUMMED_COLUMNS``, summed up from the ledger.
SUMS = (
    "SUM(credits)",
    "SUM(excess_credits)",
    "SUM(grant_credits)",
    "SUM(cost)",
    "COUNT(*) FILTER (WHERE kind = 'usage')",
    "COUNT(*) FILTER (WHERE kind = 'usage' AND status = 'failed')",
    "SUM(input_tokens)",
    "SUM(output_tokens)",
    "COALESCE(SUM(latency_ms), 0)",
    "COUNT(latency_ms)",
)
# The ledger with each event's local day, once per day row and once per month row.
LEDGER = """
    WITH e AS (
        SELECT e.*, (e.timestamp AT TIME ZONE s.timezone)::date AS local_day
        FROM credits_creditevent e JOIN accounts_subscription s ON s.id = e.subscription_id
    )
    SELECT e.*, 'day' AS grain, local_day AS row_day FROM e
    UNION ALL
    SELECT e.*, 'month' AS grain, date_trunc('month', local_day)::date AS row_day FROM e
"""


def latency_bucket_bounds() -> list[int]:
    """The histogram buckets' lowest latencies as the model documents them: 0, then the
    integers in (g^(k-1), g^k] for g = 101/99, empty ranges skipped, up to 2^31 - 1."""
    bounds, g, k = [0], Fraction(101, 99), 0
    while (lowest := int(g ** (k - 1)) + 1) <= 2**31 - 1:
        if int(g**k) >= lowest:
            bounds.append(lowest)
        k += 1
    return bounds


def fetch(statement: str, params=None) -> Counter:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return Counter(map(tuple, cursor.fetchall()))


def table(name: str, columns) -> Counter:
    return fetch(f"SELECT {', '.join(columns)} FROM {name}")  # noqa: S608


def expected_narrow(dimensions, *, latest=False, sessions=False) -> Counter:
    key = ", ".join(("subscription_id", "grain", "row_day", *dimensions))
    extra = ["MAX(timestamp)"] if latest else []
    if sessions:
        in_session = "kind = 'usage' AND session_id <> ''"
        extra += [
            f"COUNT(*) FILTER (WHERE {in_session})",
            f"COUNT(DISTINCT (local_day, session_id)) FILTER (WHERE {in_session})",
        ]
    return fetch(
        f"SELECT {key}, {', '.join((*SUMS, *extra))} FROM ({LEDGER}) g GROUP BY {key}"  # noqa: S608
    )


def expected_histograms(dimensions) -> Counter:
    key = ", ".join(("subscription_id", "grain", "row_day", *dimensions))
    return fetch(
        f"""
        SELECT {key}, COALESCE(
            jsonb_object_agg(bucket, runs) FILTER (WHERE bucket IS NOT NULL), '{{}}')::text
        FROM (
            SELECT {key}, CASE WHEN kind = 'usage'
                THEN width_bucket(latency_ms, %s::integer[]) - 1 END AS bucket, COUNT(*) AS runs
            FROM ({LEDGER}) g GROUP BY {key}, {len(dimensions) + 4}
        ) b
        GROUP BY {key}
        """,  # noqa: S608
        [latency_bucket_bounds()],
    )


def assert_rollups_equal_the_ledger():
    daily_key = ("subscription_id", "local_day", "period_id", *DIMENSIONS)
    assert table(
        "credits_dailyusage",
        ("subscription_id", "day", "period_id", *DIMENSIONS, *SUMMED_COLUMNS, "last_event_at"),
    ) == fetch(
        f"SELECT {', '.join(daily_key)}, {', '.join(SUMS)}, MAX(timestamp) "  # noqa: S608
        f"FROM ({LEDGER}) g WHERE grain = 'day' GROUP BY {', '.join(daily_key)}"
    )
    for name, dimensions in NARROW.items():
        person, agent = name == "credits_personrollup", name == "credits_agentrollup"
        columns = ["subscription_id", "grain", "day", *dimensions, *SUMMED_COLUMNS]
        columns += ["last_event_at"] if person else []
        columns += ["session_runs", "sessions"] if agent else []
        expected = expected_narrow(dimensions, latest=person, sessions=agent)
        assert table(name, columns) == expected, name
        if name in ("credits_agentrollup", "credits_modelrollup"):
            histogram = ["subscription_id", "grain", "day", *dimensions, "latency_histogram::text"]
            assert table(name, histogram) == expected_histograms(dimensions), name
    # The instant each event's local hour starts: the event's instant less the minutes and
    # seconds its local wall-clock time is past the hour (half-hour zones, DST included).
    hourly_key = ("e.subscription_id", "local_hour", *(f"e.{name}" for name in DIMENSIONS))
    assert table(
        "credits_hourlyusage", ("subscription_id", "hour", *DIMENSIONS, *SUMMED_COLUMNS)
    ) == fetch(
        f"SELECT {', '.join(hourly_key)}, {', '.join(SUMS)} FROM ("  # noqa: S608
        "SELECT e.*, e.timestamp - ((e.timestamp AT TIME ZONE s.timezone) - date_trunc('hour', "
        "e.timestamp AT TIME ZONE s.timezone)) AS local_hour FROM credits_creditevent e "
        "JOIN accounts_subscription s ON s.id = e.subscription_id"
        f") e GROUP BY {', '.join(hourly_key)}"
    )
    assert table(
        "credits_agentsessionday", ("subscription_id", "day", "agent_id", "session_id")
    ) == fetch(
        f"SELECT DISTINCT subscription_id, local_day, agent_id, session_id FROM ({LEDGER}) g "  # noqa: S608
        "WHERE kind = 'usage' AND session_id <> ''"
    )


def assert_counters_equal_the_ledger():
    columns = ("id", "credits_used", "excess_used", "grant_used")
    assert table("credits_billingperiod", columns) == fetch(
        "SELECT p.id, COALESCE(SUM(e.credits), 0), COALESCE(SUM(e.excess_credits), 0), "
        "COALESCE(SUM(e.grant_credits), 0) "
        "FROM credits_billingperiod p LEFT JOIN credits_creditevent e ON e.period_id = p.id "
        "GROUP BY p.id"
    )
    assert table("credits_userperiodusage", ("period_id", "user_id", "credits_used")) == fetch(
        "SELECT period_id, user_id, SUM(credits) FROM credits_creditevent "
        "WHERE user_id IS NOT NULL GROUP BY 1, 2"
    )
    assert table("credits_teamperiodusage", ("period_id", "team_id", "credits_used")) == fetch(
        "SELECT e.period_id, m.team_id, SUM(e.credits) FROM credits_creditevent e "
        "JOIN accounts_teammembership m "
        "ON m.user_id = e.user_id AND m.subscription_id = e.subscription_id GROUP BY 1, 2"
    )
    assert table("credits_apikeyperiodusage", ("period_id", "api_key_id", "credits_used")) == (
        fetch(
            "SELECT period_id, api_key_id, SUM(credits) FROM credits_creditevent "
            "WHERE api_key_id IS NOT NULL GROUP BY 1, 2"
        )
    )


@pytest.fixture
def ledger(world):
    """About 200 events in Acme (Pacific/Auckland), its sub-account Acme Labs
    (America/New_York, mostly drawing on a grant) and Globex (Europe/Prague), priced, with a
    price change, and adjustments up and down."""
    world.subscription.timezone = "Pacific/Auckland"
    world.subscription.base_allocation = Decimal(1_000_000)
    world.subscription.save()
    # Labs draws most of its credits from a grant; prices change mid-history.
    labs = factories.SubscriptionFactory(
        name="Acme Labs",
        parent=world.subscription,
        timezone="America/New_York",
        base_allocation=Decimal(20),
    )
    factories.grant(labs, "1000000", effective_at=START, now=START)
    factories.plan_price(
        "pro", credit_price="0.012", excess_price="0.03", effective_from=START - timedelta(days=1)
    )
    factories.subscription_price(
        labs, credit_price="0.0105", excess_price="0.03", effective_from=START + timedelta(days=5)
    )
    Subscription.objects.filter(pk=world.other_subscription.pk).update(
        base_allocation=Decimal(1_000_000)
    )
    recorder = EventRecorder(world)
    writing = factories.ProductFactory(slug="writing-assistant", name="Writing assistant")
    writing.enabled_for.add(world.subscription, labs, world.other_subscription)
    Product.objects.get(slug="ai-agent").enabled_for.add(labs)

    members = [factories.UserFactory(email=f"member{n}@acme.example") for n in range(4)]
    for n, member in enumerate(members):
        environment = (world.environment, world.other_environment)[n % 2]
        factories.membership(member, Role.MEMBER, environment=environment)
    writers = factories.TeamFactory(subscription=world.subscription, name="Writers")
    support = factories.TeamFactory(subscription=world.subscription, name="Support")
    for member, team in zip(members[:3], (writers, writers, support), strict=True):
        factories.team_membership(member, team)
    labs_environment = factories.EnvironmentFactory(
        project=factories.ProjectFactory(subscription=labs, name="Research"), name="Lab"
    )
    researcher = factories.UserFactory(email="rita@labs.example")
    factories.membership(researcher, Role.MEMBER, environment=labs_environment)

    # Per key: who sends, each with an environment they are a member of (None: the key alone).
    production, staging = world.environment, world.other_environment
    accounts = [
        (
            recorder.client,
            [
                *zip(members, (production, staging, production, staging), strict=True),
                (world.member, production),
                (None, staging),
            ],
        ),
        (EventRecorder.key_client(world.subscription, name="Nightly sync"), [(None, production)]),
        (
            EventRecorder.key_client(labs, name="Lab key"),
            [(researcher, labs_environment), (None, labs_environment)],
        ),
        (
            EventRecorder.key_client(world.other_subscription, name="Globex key"),
            [(world.outsider, world.foreign_environment), (None, world.foreign_environment)],
        ),
    ]
    generator = random.Random(20261101)
    for day in range(DAYS):
        at = START + timedelta(days=day)
        for client, people in accounts:
            events = []
            for _ in range(generator.randint(1, 5)):
                person, environment = generator.choice(people)
                events.append(
                    recorder.payload(
                        timestamp=(
                            at + timedelta(seconds=generator.randint(0, 86_399))
                        ).isoformat(),
                        environment=str(environment.public_id),
                        user=person.email if person else None,
                        product=generator.choice(["ai-agent", "writing-assistant"]),
                        feature=generator.choice(["chat", "summary", ""]),
                        agent=generator.choice(["Support bot", "Translator", None]),
                        model=generator.choice(["gpt-5", "gpt-5-mini", "claude", ""]),
                        credits=str(Decimal(generator.randint(0, 99_999)) / 10_000),
                        input_tokens=generator.randint(0, 5000),
                        output_tokens=generator.randint(0, 2000),
                        latency_ms=generator.choice([None, 0, generator.randint(1, 90_000)]),
                        status=generator.choice(["succeeded", "succeeded", "failed"]),
                        session_id=generator.choice(["", "a", "b", "c"]),
                    )
                )
            with time_machine.travel(at + timedelta(days=1), tick=False):
                response = client.post("/api/v1/events/batch/", {"events": events}, format="json")
            assert response.json()["refused"] == 0, response.json()
    with time_machine.travel(START + timedelta(days=DAYS), tick=False):
        for credits, user, subscription in (
            ("5", world.member, world.subscription),
            ("-2.5", members[0], world.subscription),
            ("-1.25", None, world.subscription),
            ("3", researcher, labs),
        ):
            record_adjustment(
                subscription=subscription,
                credits=Decimal(credits),
                reason="Correction",
                created_by=world.admin,
                user=user,
            )
    return world


def test_rollups_and_counters_equal_the_ledger_as_recorded_rebuilt_and_bulk_derived(ledger):
    assert_rollups_equal_the_ledger()
    assert_counters_equal_the_ledger()
    totals = fetch("SELECT SIGN(SUM(grant_credits)), SIGN(SUM(cost)) FROM credits_creditevent")
    assert totals == {(1, 1): 1}  # grants drawn on, money counted: the sums are not all 0

    call_command("rebuild_rollups", stdout=open("/dev/null", "w"))  # noqa: SIM115

    assert_rollups_equal_the_ledger()
    assert_counters_equal_the_ledger()

    with connection.cursor() as cursor:
        for derived in (
            "credits_dailyusage",
            "credits_hourlyusage",
            *NARROW,
            "credits_agentsessionday",
            "credits_userperiodusage",
            "credits_teamperiodusage",
            "credits_apikeyperiodusage",
        ):
            cursor.execute(f"DELETE FROM {derived}")  # noqa: S608
        cursor.execute(
            "UPDATE credits_billingperiod SET credits_used = 0, excess_used = 0, grant_used = 0"
        )
        derive_from_ledger(cursor, list(Subscription.objects.values_list("pk", flat=True)))

    assert_rollups_equal_the_ledger()
    assert_counters_equal_the_ledger()


# Per report: the column that names a row, and the ledger's credits per value of it (plain
# SQL over Acme's events in the timeframe; ``{accounts}`` widens it to the sub-accounts).
REPORTS = {
    "usage-by-user": ("user_id", "e.user_id, CASE WHEN e.user_id IS NULL THEN e.api_key_id END"),
    "usage-by-agent": ("agent_id", "e.agent_id"),
    "usage-by-model": ("model", "e.model"),
    "usage-by-product": (
        "product",
        "(SELECT p.name FROM credits_product p WHERE p.id = e.product_id)",
    ),
    "usage-by-feature": ("feature", "e.feature"),
    "usage-by-team": (
        "team_id",
        "(SELECT m.team_id FROM accounts_teammembership m "
        "WHERE m.user_id = e.user_id AND m.subscription_id = e.subscription_id)",
    ),
    "usage-by-environment": (
        "environment_id",
        "(SELECT v.public_id::text FROM accounts_environment v WHERE v.id = e.environment_id)",
    ),
    "usage-by-sub-account": ("sub_account_id", "e.subscription_id"),
}
TIMEFRAMES = [
    ("2026-10-25", "2026-11-05"),  # every event of Acme's
    ("2026-10-28", "2026-11-02"),  # days of October, then days of November
    ("2026-11-01", "2026-11-01"),
]


def ledger_credits(named_by: str, subscriptions: list[int], first_day, last_day) -> list:
    """(the row's name, credits) per group of Acme's events on these local days."""
    rows = fetch(
        f"SELECT {named_by}, SUM(e.credits) FROM credits_creditevent e "  # noqa: S608
        "JOIN accounts_subscription s ON s.id = e.subscription_id "
        "WHERE e.subscription_id = ANY(%s) "
        "AND (e.timestamp AT TIME ZONE s.timezone)::date BETWEEN %s AND %s "
        f"GROUP BY {named_by}",
        [subscriptions, first_day, last_day],
    )
    return [(row[0], row[-1]) for row in rows]


def test_every_reports_credits_per_row_equal_the_ledger(ledger):
    client = logged_in(ledger.admin)
    acme = ledger.subscription.pk
    with_labs = list(Subscription.objects.filter(parent=acme).values_list("pk", flat=True))

    for slug, (column, named_by) in REPORTS.items():
        subscriptions = [acme, *with_labs] if slug == "usage-by-sub-account" else [acme]
        for first_day, last_day in TIMEFRAMES:
            response = client.get(
                f"/api/v1/reports/{slug}/",
                {"start": first_day, "end": last_day, "page_size": 500},
                HTTP_ACCEPT="application/json",
            )
            assert response.status_code == 200, response.content
            body = response.json()
            assert body["next"] is None
            shown = [
                (str(row[column]), Decimal(row["credits_consumed"])) for row in body["results"]
            ]
            expected = ledger_credits(named_by, subscriptions, first_day, last_day)
            assert len(shown) == len(expected), (slug, first_day)
            # Rows named by a value are compared by it; the unnamed ones (no agent, no team,
            # a key acting alone: labels, not values) by their credits.
            named = {str(name): credits for name, credits in expected if name not in (None, "")}
            assert {name: credits for name, credits in shown if name in named} == named, (
                slug,
                first_day,
            )
            assert sorted(credits for name, credits in shown if name not in named) == (
                sorted(credits for name, credits in expected if name in (None, ""))
            ), (slug, first_day)


def test_usage_by_member_feature_and_credit_type_equals_the_ledger(ledger):
    """Rows per person (or key acting alone) and feature: a base row of credits less excess,
    and an excess row where there was excess."""
    client = logged_in(ledger.admin)
    for first_day, last_day in TIMEFRAMES:
        response = client.get(
            "/api/v1/reports/usage-by-member-feature-credit-type/",
            {"start": first_day, "end": last_day, "page_size": 500},
            HTTP_ACCEPT="application/json",
        )
        assert response.status_code == 200, response.content
        shown = sorted(
            (str(row["user_id"] or ""), row["credit_type"], Decimal(row["credits_consumed"]))
            for row in response.json()["results"]
        )
        groups = fetch(
            "SELECT e.user_id, SUM(e.credits - e.excess_credits), SUM(e.excess_credits) "
            "FROM credits_creditevent e JOIN accounts_subscription s ON s.id = e.subscription_id "
            "WHERE e.subscription_id = %s "
            "AND (e.timestamp AT TIME ZONE s.timezone)::date BETWEEN %s AND %s "
            "GROUP BY e.user_id, CASE WHEN e.user_id IS NULL THEN e.api_key_id END, e.feature",
            [ledger.subscription.pk, first_day, last_day],
        )
        expected = sorted(
            (str(user_id or ""), credit_type, credits)
            for user_id, base, excess in groups
            for credit_type, credits in (("base", base), ("excess", excess))
            if credit_type == "base" or excess
        )
        assert shown == expected, first_day


def test_migrations_carry_their_sql_instead_of_importing_the_apps_code():
    """A migration replays history: code it imported from the apps would change under it.
    Only ``accounts``' first migration names live code, the validator and manager Django
    serialized into the model state (``makemigrations`` compares them). Helpers kept beside
    the migrations (``migrations/_*.py``) are frozen with them, not app code."""
    imported = set()
    root = Path(settings.BASE_DIR)
    for path in [*root.glob("*/migrations/0*.py"), *root.glob("*/migrations/_*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {(path.name, alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add((path.name, node.module))
    apps = {
        (name, module)
        for name, module in imported
        if module.split(".")[0] in APPS and ".migrations._" not in module
    }
    assert apps == {("0001_initial.py", "accounts.models")}
