"""The daily ``prune_session_claims`` task deletes the session claims (``AgentSessionDay``) of
local days no event can land on any more, and keeps every claim a late event could still need.

An event is accepted until ``LATE_EVENT_GRACE_HOURS`` (48) after the end of its local month;
claims are kept for the oldest month still open and the whole month before it. For Acme
(Europe/Prague, UTC+1 in winter) February closes at 23:00 UTC on 2 March, so January's claims
go from then on.
"""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from config.celery import app
from credits.models import AgentRollup, AgentSessionDay, DailyUsage, HourlyUsage
from credits.pruning import prune_session_claims as prune_in_batches
from credits.tasks import prune_hourly_usage, prune_session_claims
from tests import factories
from tests.factories import utc

pytestmark = pytest.mark.django_db

FEBRUARY_CLOSES_IN_PRAGUE = utc(2026, 3, 2, 23, 0)  # 00:00 on 3 March, 48 h after 1 March
FEBRUARY_CLOSES_IN_AUCKLAND = utc(2026, 3, 2, 11, 0)  # 00:00 on 3 March NZDT (UTC+13)


@pytest.fixture
def post(world, product):
    """``post(subscription, at, sessions, timestamp=None)``: one batch through the API at
    ``at``, an event per session id, timestamped ``timestamp`` (by default ``at``)."""
    for subscription in (world.subscription, world.other_subscription):
        subscription.base_allocation = Decimal(1_000_000)
        subscription.save()
    environments = {
        world.subscription.pk: world.environment,
        world.other_subscription.pk: world.foreign_environment,
    }
    keys = iter(range(1, 1_000_000))

    def send(subscription, at, sessions, *, timestamp=None):
        _, secret = factories.api_key(subscription)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
        events = [
            {
                "idempotency_key": f"op-{next(keys)}",
                "environment": str(environments[subscription.pk].public_id),
                "product": "ai-agent",
                "agent": "Support bot",
                "credits": "1.5",
                "session_id": session,
                **({"timestamp": timestamp.isoformat()} if timestamp else {}),
            }
            for session in sessions
        ]
        with time_machine.travel(at, tick=False):
            response = client.post("/api/v1/events/batch/", {"events": events}, format="json")
        assert response.json()["refused"] == 0, response.json()

    return send


def prune(at) -> int:
    with time_machine.travel(at, tick=False):
        return prune_session_claims()


def claimed_days(subscription) -> Counter:
    """Claims per local day."""
    claims = AgentSessionDay.objects.filter(subscription=subscription)
    return Counter(claims.values_list("day", flat=True))


def sessions(subscription) -> dict[tuple[str, date], int]:
    rows = AgentRollup.objects.filter(subscription=subscription)
    return {(row.grain, row.day): row.sessions for row in rows}


def test_claims_go_once_no_event_can_land_on_their_day_any_more(world, post):
    acme = world.subscription
    post(acme, utc(2026, 1, 15, 12), ["s-1", "s-2"])
    post(acme, utc(2026, 2, 28, 22, 30), ["s-1"])  # 23:30 on 28 February in Prague
    post(acme, utc(2026, 2, 28, 23, 30), ["s-1"])  # 00:30 on 1 March
    counted = sessions(acme)

    # February is still open (grace) until 23:00 UTC on 2 March; January is the margin.
    assert prune(utc(2026, 3, 2, 22, 59)) == 0
    assert prune(FEBRUARY_CLOSES_IN_PRAGUE) == 2
    assert claimed_days(acme) == {date(2026, 2, 28): 1, date(2026, 3, 1): 1}

    # March closes 48 h after 00:00 on 1 April CEST (UTC+2 since 29 March): 22:00 UTC on the 2nd.
    assert prune(utc(2026, 4, 2, 21, 59)) == 0
    assert prune(utc(2026, 4, 2, 22, 0)) == 1
    assert claimed_days(acme) == {date(2026, 3, 1): 1}
    assert sessions(acme) == counted  # the counts the claims made stay


def test_each_subscription_is_pruned_by_its_own_local_days(world, post):
    acme, globex = world.subscription, world.other_subscription
    globex.timezone = "Pacific/Auckland"
    globex.save()
    post(acme, utc(2026, 1, 31, 12), ["s-1"])  # 31 January in Prague
    post(globex, utc(2026, 1, 31, 10, 30), ["s-1"])  # 23:30 on 31 January in Auckland
    post(globex, utc(2026, 1, 31, 11, 30), ["s-1"])  # 00:30 on 1 February in Auckland

    assert prune(utc(2026, 3, 2, 10, 59)) == 0
    assert prune(FEBRUARY_CLOSES_IN_AUCKLAND) == 1

    assert claimed_days(globex) == {date(2026, 2, 1): 1}
    assert claimed_days(acme) == {date(2026, 1, 31): 1}  # Prague's February is still open
    assert prune(FEBRUARY_CLOSES_IN_PRAGUE) == 1
    assert claimed_days(acme) == {}


def test_a_late_event_after_pruning_still_counts_its_session_once(world, post):
    acme = world.subscription
    post(acme, utc(2026, 1, 20, 12), ["s-1"])
    post(acme, utc(2026, 2, 27, 12), ["s-1"])
    assert prune(utc(2026, 3, 2, 12)) == 0  # nothing to prune yet

    # Within February's grace window: a late event of the same session on the same day.
    post(acme, utc(2026, 3, 2, 12), ["s-1", "s-2"], timestamp=utc(2026, 2, 27, 13))

    assert sessions(acme)["day", date(2026, 2, 27)] == 2
    assert sessions(acme)["month", date(2026, 2, 1)] == 2
    assert claimed_days(acme) == {date(2026, 1, 20): 1, date(2026, 2, 27): 2}


def test_a_session_recorded_after_pruning_still_counts_once_a_day(world, post):
    acme = world.subscription
    post(acme, utc(2026, 1, 20, 12), ["s-1"])
    post(acme, utc(2026, 3, 10, 9), ["s-1"])
    assert prune(utc(2026, 3, 10, 12)) == 1  # 20 January

    post(acme, utc(2026, 3, 10, 15), ["s-1", "s-1", "s-2"])
    post(acme, utc(2026, 3, 11, 9), ["s-1"])

    counted = sessions(acme)
    assert counted["day", date(2026, 1, 20)] == 1
    assert counted["day", date(2026, 3, 10)] == 2
    assert counted["day", date(2026, 3, 11)] == 1
    assert counted["month", date(2026, 3, 1)] == 3


def test_running_it_twice_is_a_no_op(world, post):
    acme = world.subscription
    post(acme, utc(2026, 1, 20, 12), ["s-1", "s-2", "s-3"])
    post(acme, utc(2026, 3, 10, 9), ["s-1"])
    assert prune(utc(2026, 3, 10, 12)) == 3
    claims = set(AgentSessionDay.objects.values_list("pk", flat=True))
    counted = sessions(acme)

    assert prune(utc(2026, 3, 10, 12)) == 0

    assert set(AgentSessionDay.objects.values_list("pk", flat=True)) == claims
    assert sessions(acme) == counted


def test_it_deletes_in_batches_not_row_by_row(world, post):
    post(world.subscription, utc(2026, 1, 20, 12), [f"s-{n}" for n in range(25)])

    with CaptureQueriesContext(connection) as queries:
        deleted = prune_in_batches(now=utc(2026, 3, 10, 12), batch_size=10)

    assert deleted == 25
    statements = [query["sql"] for query in queries.captured_queries]
    assert sum(sql.startswith("DELETE") for sql in statements) == 4  # 10, 10, 5, then none
    assert not AgentSessionDay.objects.exists()


def test_the_task_travels_on_the_maintenance_queue():
    route = app.amqp.router.route({}, "credits.tasks.prune_session_claims")
    assert route["queue"].name == "alerts"  # with the other credits tasks


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_runs_at_once_delete_each_claim_once_while_events_come_in(world, post):
    acme = world.subscription
    post(acme, utc(2026, 1, 20, 12), [f"s-{n}" for n in range(60)])
    now = utc(2026, 3, 10, 12)

    def run(job):
        try:
            if job == "record":
                post(acme, now, [f"s-{n}" for n in range(30)])
                return 0
            return prune_in_batches(now=now, batch_size=5)
        finally:
            connections.close_all()

    with time_machine.travel(now, tick=False), ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run, ["prune", "record", "prune"]))

    assert sum(results) == 60
    assert claimed_days(acme) == {date(2026, 3, 10): 30}
    assert prune(now) == 0


# --- The hourly rollup: kept for HOURLY_USAGE_RETENTION_DAYS -------------------------------


def test_hourly_usage_goes_after_its_retention_and_the_daily_rollups_stay(world, post):
    post(world.subscription, utc(2026, 1, 10, 12), ["a"])  # 90 days before 10 April, 12:00
    post(world.subscription, utc(2026, 1, 10, 13), ["b"])
    post(world.other_subscription, utc(2026, 1, 10, 11), ["c"])
    daily = list(DailyUsage.objects.order_by("pk").values_list("pk", "credits"))

    with time_machine.travel(utc(2026, 4, 10, 13, 0), tick=False):
        assert prune_hourly_usage() == 2  # the hours that started before 13:00 90 days ago

    assert list(HourlyUsage.objects.values_list("hour", flat=True)) == [utc(2026, 1, 10, 13)]
    assert list(DailyUsage.objects.order_by("pk").values_list("pk", "credits")) == daily
