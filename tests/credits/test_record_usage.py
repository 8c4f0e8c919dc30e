"""POST /api/v1/events/: recording one AI operation through the HTTP API."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.db.models import Sum

from accounts.models import Role
from credits import recording
from credits.models import (
    Agent,
    BillingPeriod,
    CreditEvent,
    CreditLimit,
    DailyUsage,
    IdempotencyRecord,
    TeamPeriodUsage,
    ThresholdAlert,
    UserPeriodUsage,
)
from tests import factories
from tests.credits.conftest import set_allocation
from tests.factories import frozen_at, utc

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 23, 10)
URL = "/api/v1/events/"
BATCH_URL = "/api/v1/events/batch/"


frozen_now = frozen_at(NOW)


def ledger_total(subscription) -> Decimal:
    return CreditEvent.objects.filter(subscription=subscription).aggregate(t=Sum("credits"))["t"]


def test_records_an_event_and_returns_it_with_the_balance(world, key_client, event_payload):
    response = key_client.post(URL, event_payload(credits="2.5"), format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["event"]["credits"] == "2.5000"
    assert body["event"]["user"] == world.member.email
    assert body["event"]["environment"] == str(world.environment.public_id)
    assert body["event"]["agent"] == "Support bot"
    assert body["balance"]["used"] == "2.5000"
    assert body["balance"]["remaining"] == "997.5000"
    assert body["balance"]["period_start"] == "2026-10-31T23:00:00Z"  # 1 Nov, Prague
    event = CreditEvent.objects.get()
    assert (event.subscription, event.environment, event.user) == (
        world.subscription,
        world.environment,
        world.member,
    )
    assert UserPeriodUsage.objects.get(user=world.member).credits_used == Decimal("2.5")
    rollup = DailyUsage.objects.get()
    assert (rollup.day.isoformat(), rollup.credits, rollup.runs) == (
        "2026-11-23",
        Decimal("2.5"),
        1,
    )


def test_unknown_agents_are_registered_on_first_use(world, key_client, event_payload):
    key_client.post(URL, event_payload(agent="Translator", agent_type="multi_step"), format="json")

    agent = Agent.objects.get(name="Translator")
    assert (agent.subscription, agent.agent_type, agent.model, agent.created_by) == (
        world.subscription,
        "multi_step",
        "gpt-5-mini",
        world.member,
    )


def test_the_api_key_itself_can_be_the_actor(world, key_client, event_payload):
    response = key_client.post(URL, event_payload(user=None), format="json")

    assert response.status_code == 201
    assert response.json()["event"]["user"] == "Backend"  # the key's name


def test_replaying_the_same_payload_returns_the_original_and_charges_once(
    world, key_client, event_payload
):
    payload = event_payload()
    first = key_client.post(URL, payload, format="json")
    replay = key_client.post(URL, payload, format="json")

    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json()["event"]["id"] == first.json()["event"]["id"]
    assert CreditEvent.objects.count() == 1
    assert BillingPeriod.objects.get().credits_used == Decimal("1.5")


def test_reusing_a_key_with_another_payload_is_a_conflict(world, key_client, event_payload):
    key_client.post(URL, event_payload(idempotency_key="k"), format="json")
    response = key_client.post(URL, event_payload(idempotency_key="k", credits="9"), format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert CreditEvent.objects.count() == 1


def test_idempotency_keys_are_per_subscription(world, key_client, event_payload):
    _, other_secret = factories.api_key(world.other_subscription)
    key_client.post(URL, event_payload(idempotency_key="shared"), format="json")

    key_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_secret}")
    response = key_client.post(
        URL,
        event_payload(
            idempotency_key="shared",
            environment=str(world.foreign_environment.public_id),
            user=world.outsider.email,
        ),
        format="json",
    )

    assert response.status_code == 201


def test_hard_limit_refuses_the_event_that_would_cross_it(world, key_client, event_payload):
    set_allocation(world.subscription, "10")
    assert key_client.post(URL, event_payload(credits="6"), format="json").status_code == 201

    refused = key_client.post(URL, event_payload(idempotency_key="big", credits="5"), format="json")

    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "credit_limit_exceeded"
    assert ledger_total(world.subscription) == Decimal("6")
    assert not IdempotencyRecord.objects.filter(key="big").exists()
    # Exactly up to the limit is fine, and a refused key can be used again.
    exact = key_client.post(URL, event_payload(idempotency_key="big", credits="4"), format="json")
    assert exact.status_code == 201
    assert exact.json()["balance"]["remaining"] == "0.0000"


def test_soft_limit_allows_excess_up_to_the_allowance(world, key_client, event_payload):
    set_allocation(world.subscription, "10", mode="soft", allowance="5")

    responses = [
        key_client.post(URL, event_payload(credits=credits), format="json")
        for credits in ("8", "4", "4", "3")
    ]

    assert [r.status_code for r in responses] == [201, 201, 402, 201]
    assert [r.json()["event"]["excess_credits"] for r in responses if r.status_code == 201] == [
        "0.0000",
        "2.0000",
        "3.0000",
    ]
    balance = responses[-1].json()["balance"]
    assert (balance["used"], balance["excess_used"], balance["excess_remaining"]) == (
        "15.0000",
        "5.0000",
        "0.0000",
    )


def test_lowering_the_limit_below_usage_blocks_further_use(world, key_client, event_payload):
    key_client.post(URL, event_payload(credits="50"), format="json")
    set_allocation(world.subscription, "40")

    response = key_client.post(URL, event_payload(credits="0"), format="json")

    assert response.json()["error"]["code"] == "credit_limit_exceeded"
    assert ledger_total(world.subscription) == Decimal("50")  # history untouched


def test_user_limit(world, key_client, event_payload):
    CreditLimit.objects.create(subscription=world.subscription, user=world.member, credits=3)
    assert key_client.post(URL, event_payload(credits="2"), format="json").status_code == 201

    response = key_client.post(URL, event_payload(credits="2"), format="json")

    assert response.status_code == 402
    assert response.json()["error"]["code"] == "user_limit_exceeded"
    assert BillingPeriod.objects.get().credits_used == Decimal("2")
    assert UserPeriodUsage.objects.get().credits_used == Decimal("2")


def test_team_limit(world, key_client, event_payload):
    team = factories.TeamFactory(subscription=world.subscription)
    factories.team_membership(world.member, team)
    factories.team_membership(world.manager, team)
    CreditLimit.objects.create(subscription=world.subscription, team=team, credits=5)
    key_client.post(URL, event_payload(credits="4"), format="json")

    response = key_client.post(
        URL, event_payload(user=world.manager.email, credits="2"), format="json"
    )

    assert response.status_code == 402
    assert response.json()["error"]["code"] == "team_limit_exceeded"
    assert TeamPeriodUsage.objects.get().credits_used == Decimal("4")


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"product": "translation"}, 422, "product_not_enabled"),
        ({"environment": "7d1b0a5e-0000-4000-8000-000000000000"}, 404, "unknown_environment"),
        ({"user": "charlie@globex.example"}, 422, "not_a_member"),
        ({"user": "nobody@example.com"}, 422, "not_a_member"),
        ({"agent": "999999"}, 422, "unknown_agent"),
        ({"timestamp": "2026-11-23T10:06:00Z"}, 422, "timestamp_in_future"),
    ],
)
def test_refusals_have_a_stable_code_and_store_nothing(
    world, key_client, event_payload, overrides, status, code
):
    factories.ProductFactory(slug="translation")

    response = key_client.post(URL, event_payload(**overrides), format="json")

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert not CreditEvent.objects.exists()
    assert not IdempotencyRecord.objects.exists()


def test_another_subscriptions_environment_is_unknown(world, key_client, event_payload):
    payload = event_payload(environment=str(world.foreign_environment.public_id), user=None)

    response = key_client.post(URL, payload, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_environment"


def test_a_key_restricted_to_one_environment_cannot_charge_another(world, event_payload, product):
    _, secret = factories.api_key(world.subscription, environment=world.other_environment)
    client = factories_client(secret)

    response = client.post(URL, event_payload(), format="json")

    assert response.json()["error"]["code"] == "unknown_environment"


def test_a_subscription_without_products_has_zero_usage(world, key_client, event_payload, product):
    product.enabled_for.clear()

    response = key_client.post(URL, event_payload(), format="json")

    assert response.json()["error"]["code"] == "product_not_enabled"
    assert key_client.get("/api/v1/balance/").json()["used"] == "0.0000"


def test_late_events_are_booked_in_their_own_period_within_the_grace_window(
    world, key_client, event_payload
):
    october_event = event_payload(timestamp="2026-10-31T22:30:00Z")  # 23:30 on 31 Oct in Prague
    october_end = utc(2026, 10, 31, 23)

    with time_machine.travel(october_end + timedelta(hours=47), tick=False):
        accepted = key_client.post(URL, october_event, format="json")
    with time_machine.travel(october_end + timedelta(hours=49), tick=False):
        closed = key_client.post(
            URL, event_payload(timestamp="2026-10-31T22:31:00Z"), format="json"
        )

    assert accepted.status_code == 201
    assert BillingPeriod.objects.get().start == utc(2026, 9, 30, 22)  # 1 Oct, Prague summer time
    assert closed.status_code == 422
    assert closed.json()["error"]["code"] == "period_closed"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"credits": "-1"}, "credits"),
        ({"credits": "1.00001"}, "credits"),
        ({"credits": "abc"}, "credits"),
        ({"credits": None}, "credits"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"timestamp": "2026-11-23T10:00:00"}, "timestamp"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"environment": "not-a-uuid"}, "environment"),
        ({"input_tokens": -5}, "input_tokens"),
        ({"status": "maybe"}, "status"),
        ({"user": "not an email"}, "user"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_fields_get_a_400_field_by_field(key_client, event_payload, overrides, field):
    response = key_client.post(URL, event_payload(**overrides), format="json")

    assert field in factories.invalid_fields(response)
    assert not CreditEvent.objects.exists()


def test_credits_as_a_json_number_stay_exact(world, key_client, event_payload):
    body = '{"idempotency_key": "n", "environment": "%s", "product": "ai-agent", "credits": 0.1}'
    response = key_client.post(
        URL, body % world.environment.public_id, content_type="application/json"
    )

    assert response.status_code == 201
    assert CreditEvent.objects.get().credits == Decimal("0.1")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("{not json", 400),
        ("[1, 2, 3]", 400),
        ("[" * 100_000 + "]" * 100_000, 400),
        ('{"idempotency_key": "' + "x" * 3_000_000 + '"}', 413),
    ],
)
def test_hostile_bodies_get_a_4xx_in_the_error_shape(key_client, body, status):
    response = key_client.post(URL, body, content_type="application/json")

    assert response.status_code == status
    assert "code" in response.json()["error"]


@pytest.mark.parametrize("header", [None, "Api-Key nope.nope", "Api-Key ", "Bearer x"])
def test_recording_needs_a_valid_api_key(event_payload, product, header):
    client = factories_client(None)
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)

    response = client.post(URL, event_payload(), format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"not_authenticated", "authentication_failed"}


def test_a_revoked_key_is_refused_at_once(world, event_payload, product):
    from accounts.services import revoke_api_key

    key, secret = factories.api_key(world.subscription)
    client = factories_client(secret)
    assert client.post(URL, event_payload(), format="json").status_code == 201

    revoke_api_key(api_key=key)

    assert client.post(URL, event_payload(), format="json").status_code == 401


def test_people_cannot_record_usage(world, event_payload, product):
    client = factories_client(None)
    client.force_authenticate(world.admin)

    response = client.post(URL, event_payload(), format="json")

    assert response.status_code == 403


def test_crossing_thresholds_records_each_once(world, key_client, event_payload):
    set_allocation(world.subscription, "10", mode="soft", allowance="2")

    for credits in ("7", "1", "1", "1", "1", "1"):
        key_client.post(URL, event_payload(credits=credits), format="json")

    assert sorted(ThresholdAlert.objects.values_list("threshold", flat=True)) == [
        "allocation_100",
        "allocation_80",
        "excess_100",
    ]


def alerts() -> list[str]:
    return sorted(ThresholdAlert.objects.values_list("threshold", flat=True))


def test_a_refusal_at_the_hard_cap_tells_the_admins_once(
    world, key_client, event_payload, settings, mailoutbox, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    set_allocation(world.subscription, "10")
    key_client.post(URL, event_payload(credits="9.5"), format="json")  # 95%: never lands on 10

    with django_capture_on_commit_callbacks(execute=True):
        refused = [key_client.post(URL, event_payload(credits="1"), format="json") for _ in "ab"]

    assert [response.status_code for response in refused] == [402, 402]
    assert alerts() == ["allocation_100", "allocation_80"]
    (email,) = mailoutbox
    assert email.subject == "Acme has used all of its credits for November 2026"
    assert "Used: 9.5000 of 10.0000 credits (95.0%)" in email.body
    assert "Further usage is refused until the period resets" in email.body


def test_a_refused_event_far_from_the_cap_raises_no_alert(world, key_client, event_payload):
    set_allocation(world.subscription, "10")
    key_client.post(URL, event_payload(credits="5"), format="json")

    response = key_client.post(URL, event_payload(credits="6"), format="json")

    assert response.status_code == 402
    assert alerts() == []


def test_refusals_at_the_soft_cap_in_a_batch_alert_on_the_excess_allowance(
    world, key_client, event_payload
):
    set_allocation(world.subscription, "10", mode="soft", allowance="2")
    key_client.post(URL, event_payload(credits="11.5"), format="json")
    assert alerts() == ["allocation_100", "allocation_80"]

    response = key_client.post(
        BATCH_URL,
        {"events": [event_payload(credits="0.25"), event_payload(credits="1")]},
        format="json",
    )

    assert [result["status"] for result in response.json()["results"]] == [201, 402]
    assert alerts() == ["allocation_100", "allocation_80", "excess_100"]


def test_recording_takes_a_bounded_number_of_queries(
    world, key_client, event_payload, django_assert_max_num_queries
):
    key_client.post(URL, event_payload(), format="json")  # opens the period, registers the agent

    with django_assert_max_num_queries(8):
        response = key_client.post(URL, event_payload(), format="json")

    assert response.status_code == 201


def _plan_cache_mode() -> tuple[int, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), current_setting('plan_cache_mode')")
        return cursor.fetchone()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_generic_plans_are_forced_for_the_recording_transaction_only(world, product, monkeypatch):
    """The ledger statement runs with generic plans; the connection's next transactions plan
    as configured again (the setting is local to the recording's transaction)."""
    api_key, _ = factories.api_key(world.subscription)
    before = _plan_cache_mode()
    during = []
    add_to_ledger = recording.add_to_ledger

    def spy(events, *, zone):
        during.append(_plan_cache_mode())
        return add_to_ledger(events, zone=zone)

    monkeypatch.setattr(recording, "add_to_ledger", spy)
    recording.record_usage(
        api_key=api_key,
        usage=recording.Usage(
            idempotency_key="op-1",
            environment=world.environment.public_id,
            product="ai-agent",
            credits=Decimal("1.5"),
        ),
    )

    assert during == [(before[0], "force_generic_plan")]
    assert _plan_cache_mode() == before
    assert before[1] == "auto"


def test_rollups_and_counters_equal_the_ledger(world, key_client, event_payload):
    team = factories.TeamFactory(subscription=world.subscription)
    factories.team_membership(world.member, team)
    for index, (user, credits, hour) in enumerate(
        [
            (world.member.email, "1.25", 1),
            (world.manager.email, "3", 2),
            (None, "0.0001", 3),
            (world.member.email, "7.5", 23),
            (world.member.email, "2", 22),
        ]
    ):
        key_client.post(
            URL,
            event_payload(
                user=user, credits=credits, timestamp=f"2026-11-2{index % 3}T{hour:02}:00Z"
            ),
            format="json",
        )

    ledger = CreditEvent.objects.aggregate(t=Sum("credits"))["t"]
    assert DailyUsage.objects.aggregate(t=Sum("credits"))["t"] == ledger
    assert BillingPeriod.objects.get().credits_used == ledger
    member_events = CreditEvent.objects.filter(user=world.member).aggregate(t=Sum("credits"))["t"]
    assert UserPeriodUsage.objects.get(user=world.member).credits_used == member_events
    assert TeamPeriodUsage.objects.get(team=team).credits_used == member_events
    # 23:00 UTC on the 20th is already the 21st in Prague; 22:00 UTC on the 21st is not the 22nd.
    on_the_21st = DailyUsage.objects.filter(day="2026-11-21").aggregate(t=Sum("credits"))["t"]
    assert on_the_21st == Decimal("3") + Decimal("7.5") + Decimal("2")


def test_an_admin_of_the_subscription_may_be_named_as_the_user(world, key_client, event_payload):
    response = key_client.post(URL, event_payload(user=world.admin.email.upper()), format="json")

    assert response.status_code == 201
    assert response.json()["event"]["user"] == world.admin.email
    assert Role.SUBSCRIPTION_ADMIN in world.admin.memberships.values_list("role", flat=True)


def factories_client(secret):
    from rest_framework.test import APIClient

    client = APIClient()
    if secret:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return client


def test_each_statement_of_an_event_keeps_its_parse_cached():
    """psycopg caches a statement's parse only up to a length, which the app raises for the
    recording service's long constant statements (credits/apps.py)."""
    from psycopg import _queries

    from credits import charging, ledger

    for statement in (
        recording._found_statement(),
        recording._claim_statement(),
        charging._within_base_statement(),
        ledger._statement(),
    ):
        assert len(statement.encode()) <= _queries.MAX_CACHED_STATEMENT_LENGTH
