"""The narrow rollups (person, agent, model, subscription), their latency histograms and
session counts: what ``add_to_rollups`` writes as events come in, single, in batches and from
concurrent writers, equals what ``rebuild_rollups`` computes from the ledger alone (and both
equal the ledger summed in plain SQL: ``test_rollups_equal_the_ledger``)."""

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.models import Role
from credits.models import (
    AgentRollup,
    AgentSessionDay,
    CreditEvent,
    ModelRollup,
    PersonRollup,
    ProductRollup,
)
from credits.recording import record_adjustment
from credits.rollups import (
    LATENCY_BUCKETS,
    LATENCY_RELATIVE_ERROR,
    ROLLUPS,
    add_to_rollups,
    latency_bucket,
    latency_bucket_value,
    latency_percentile,
    rebuild_rollups,
)
from tests import factories
from tests.credits.references import percentile_cont, rollup_rows
from tests.factories import utc

pytestmark = pytest.mark.django_db

# Every table ``add_to_rollups`` writes: each rollup of the specification, the session claims.
TABLES = (*(rollup.model for rollup in ROLLUPS), AgentSessionDay)


def assert_rollups_equal_the_rebuild(subscription):
    written = rollup_rows(subscription, TABLES)
    rebuild_rollups(subscription=subscription)
    assert rollup_rows(subscription, TABLES) == written
    assert written["PersonRollup"], "nothing was written"


@pytest.fixture
def auckland(world):
    """Acme in Pacific/Auckland (UTC+13 in the southern summer), with room to spend."""
    world.subscription.timezone = "Pacific/Auckland"
    world.subscription.base_allocation = Decimal(1_000_000)
    world.subscription.save()
    product = factories.ProductFactory(slug="ai-agent", name="AI agent")
    product.enabled_for.add(world.subscription)
    return world.subscription


@pytest.fixture
def post(world, auckland, event_payload):
    _, secret = factories.api_key(world.subscription)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")

    def payload(**fields):
        event = event_payload(**{"latency_ms": 800, **fields})
        return {name: value for name, value in event.items() if value is not None}

    def send(at, events):
        with time_machine.travel(at, tick=False):
            if len(events) == 1:
                response = client.post("/api/v1/events/", payload(**events[0]), format="json")
                assert response.status_code == 201, response.json()
            else:
                response = client.post(
                    "/api/v1/events/batch/",
                    {"events": [payload(**event) for event in events]},
                    format="json",
                )
                assert response.json()["refused"] == 0, response.json()

    return send


# --- Keeping them in step ----------------------------------------------------------------------


def test_single_events_batches_and_adjustments_keep_every_rollup_equal_to_the_rebuild(
    world, auckland, post
):
    # 23:50 and 00:10 in Auckland around the 1st of November (NZDT, UTC+13): two local days
    # and two local months, one session across them.
    post(utc(2026, 10, 31, 10, 50), [{"latency_ms": 120}])
    post(utc(2026, 10, 31, 11, 10), [{"latency_ms": 4000, "status": "failed"}])
    post(
        utc(2026, 11, 2),
        [
            {"user": None, "agent": None, "model": "", "session_id": "", "latency_ms": None},
            {"agent": "Translator", "model": "gpt-5", "session_id": "s-2", "latency_ms": 0},
            {"agent": "Translator", "model": "gpt-5", "session_id": "s-2", "feature": "translate"},
            {"user": world.manager.email, "session_id": "s-1", "latency_ms": 2_000_000_000},
        ],
    )
    with time_machine.travel(utc(2026, 11, 3), tick=False):
        for credits in ("5", "-2.5"):
            record_adjustment(
                subscription=auckland,
                credits=Decimal(credits),
                reason="Correction",
                created_by=world.admin,
                environment=world.environment,
                user=world.member,
            )

    assert_rollups_equal_the_rebuild(auckland)


def test_day_and_month_rows_add_up_per_dimension(world, auckland, post):
    post(utc(2026, 10, 31, 10, 50), [{"latency_ms": 100}])  # 31 October, 23:50
    post(utc(2026, 10, 31, 11, 10), [{"latency_ms": 300}])  # 1 November, 00:10
    post(utc(2026, 11, 1, 11, 10), [{"latency_ms": 300, "model": "gpt-5"}])  # 2 November

    rows = AgentRollup.objects.filter(subscription=auckland)
    november = rows.get(grain="month", day=date(2026, 11, 1))
    assert (november.runs, november.credits, november.sessions) == (2, Decimal(3), 2)
    assert november.latency_histogram == {str(latency_bucket(300)): 2}
    october = rows.get(grain="month", day=date(2026, 10, 1))
    assert (october.runs, october.sessions) == (1, 1)
    assert [
        (row.day, row.runs, row.sessions) for row in rows.filter(grain="day").order_by("day")
    ] == [(date(2026, 10, 31), 1, 1), (date(2026, 11, 1), 1, 1), (date(2026, 11, 2), 1, 1)]
    models = ModelRollup.objects.filter(subscription=auckland, grain="month", day="2026-11-01")
    assert {row.model: row.runs for row in models} == {"gpt-5-mini": 1, "gpt-5": 1}
    person = PersonRollup.objects.get(subscription=auckland, grain="month", day="2026-11-01")
    assert (person.user, person.environment, person.credits) == (
        world.member,
        world.environment,
        Decimal(3),
    )
    assert person.last_event_at == utc(2026, 11, 1, 11, 10)
    october_person = PersonRollup.objects.get(subscription=auckland, grain="day", day="2026-10-31")
    assert october_person.last_event_at == utc(2026, 10, 31, 10, 50)
    products = ProductRollup.objects.filter(subscription=auckland, grain="month")
    assert {(row.day, row.runs) for row in products} == {
        (date(2026, 10, 1), 1),
        (date(2026, 11, 1), 2),
    }
    assert AgentSessionDay.objects.filter(subscription=auckland).count() == 3


def test_a_session_counts_once_a_day_across_requests(world, auckland, post):
    for minute in range(3):
        post(utc(2026, 11, 2, 1, minute), [{"session_id": "s-9"}])
    post(utc(2026, 11, 2, 2), [{"session_id": "s-9"}, {"session_id": "s-10"}])

    day = AgentRollup.objects.get(subscription=auckland, grain="day")
    assert (day.runs, day.session_runs, day.sessions) == (5, 5, 2)
    assert_rollups_equal_the_rebuild(auckland)


def test_one_statement_per_call_on_postgresql(world, auckland, post):
    post(utc(2026, 11, 2), [{"session_id": f"s-{n}", "agent": f"Agent {n}"} for n in range(50)])
    events = list(CreditEvent.objects.filter(subscription=auckland))

    with CaptureQueriesContext(connection) as one:
        add_to_rollups(events[:1], zone=auckland.zone)
    with CaptureQueriesContext(connection) as many:
        add_to_rollups(events, zone=auckland.zone)

    assert (len(one), len(many)) == (1, 1)


# --- Concurrent writers ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_writers_keep_every_rollup_equal_to_the_rebuild(world, auckland):
    people = [world.member]
    for n in range(3):
        person = factories.UserFactory(email=f"writer{n}@acme.example")
        factories.membership(person, Role.MEMBER, environment=world.environment)
        people.append(person)
    secrets = [factories.api_key(world.subscription, name=f"Key {n}")[1] for n in range(4)]
    now = utc(2026, 11, 2, 10, 59)  # 23:59 in Auckland: the next minute is another day

    def send(n):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secrets[n % 4]}")
        events = [
            {
                "idempotency_key": f"c-{n}-{i}",
                "environment": str(world.environment.public_id),
                "user": people[(n + i) % 4].email,
                "product": "ai-agent",
                "agent": ("Support bot", "Translator")[i % 2],
                "model": ("gpt-5", "claude")[n % 2],
                "credits": str(Decimal(n + i) / 4),
                "latency_ms": 100 * (n + 1) + i,
                "session_id": f"s-{(n + i) % 3}",
                "timestamp": (now + timedelta(seconds=20 * i)).isoformat(),
            }
            for i in range(1, 6)
        ]
        try:
            if n % 2:
                response = client.post("/api/v1/events/batch/", {"events": events}, format="json")
                return [result["status"] for result in response.json()["results"]]
            return [
                client.post("/api/v1/events/", event, format="json").status_code for event in events
            ]
        finally:
            connections.close_all()

    # time-machine moves the clock of every thread
    with (
        time_machine.travel(now + timedelta(minutes=5), tick=False),
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        outcomes = list(pool.map(send, range(16)))

    assert outcomes == [[201] * 5] * 16
    assert_rollups_equal_the_rebuild(auckland)
    sessions = AgentRollup.objects.filter(subscription=auckland, grain="month")
    # Sessions s-0, s-1, s-2, each with both agents, on the 2nd and the 3rd.
    assert sum(row.sessions for row in sessions) == 3 * 2 * 2


# --- Latency buckets and the percentile ---------------------------------------------------------


def test_every_latency_is_within_one_percent_of_its_buckets_value():
    generator = random.Random(1)
    latencies = [*range(2000), *(generator.randint(1, 2**31 - 1) for _ in range(20_000))]

    for latency in latencies:
        value = latency_bucket_value(latency_bucket(latency))
        assert abs(value - latency) <= LATENCY_RELATIVE_ERROR * latency, latency
    assert [latency_bucket_value(latency_bucket(n)) for n in range(50)] == list(range(50))
    assert latency_bucket(2**31 - 1) == len(LATENCY_BUCKETS) - 1


@pytest.mark.parametrize("seed", range(20))
def test_the_histograms_percentile_is_within_one_percent_of_percentile_cont(seed):
    generator = random.Random(seed)
    values = [int(generator.lognormvariate(6.7, 1.5)) for _ in range(generator.randint(1, 3000))]
    histogram = {}
    for value in values:
        histogram[latency_bucket(value)] = histogram.get(latency_bucket(value), 0) + 1

    for fraction in (Decimal("0.5"), Decimal("0.95"), Decimal("0.99")):
        exact = percentile_cont(values, fraction)
        error = abs(latency_percentile(histogram, fraction) - exact)
        assert error <= LATENCY_RELATIVE_ERROR * exact
    assert latency_percentile({}, Decimal("0.95")) is None
