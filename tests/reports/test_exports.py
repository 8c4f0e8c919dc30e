"""GET /api/v1/exports/credit-usage/: the current billing period, one row per ledger event.

The data is ``record_november``, seen on Monday 23 November 2026.
"""

import csv
import io
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.http import StreamingHttpResponse
from rest_framework.test import APIClient

from credits.models import CreditEvent
from reports import exports, selectors
from tests import factories
from tests.factories import frozen_at, utc
from tests.reports.recorder import logged_in, record_november

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 23, 10)
EXPORT = "/api/v1/exports/credit-usage/"
HEADER = [
    *("Timestamp", "User", "Environment", "EnvironmentId", "Credits"),
    *("BaseCredits", "GrantCredits", "ExcessCredits", "Cost", "Currency"),
]


# An event's credits by type and its cost when the subscription has no price (money, with a
# price: tests/reports/test_costs.py).
def unpriced(credits: str) -> str:
    return f"{credits},{credits},0.0000,0.0000,,"


@pytest.fixture
def usage(world):
    return record_november(world)


frozen_now = frozen_at(NOW)


def export(user, **params):
    client = logged_in(user) if user else APIClient()
    return client.get(EXPORT, params)


def csv_rows(response) -> list[list[str]]:
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))


def test_the_subscription_export_lists_every_event_of_the_period(world, usage):
    response = export(world.admin, scope="subscription", format="csv")

    production = f"Website / Production,{world.environment.public_id}"
    staging = f"Website / Staging,{world.other_environment.public_id}"
    assert csv_rows(response) == [
        HEADER,
        f"2026-11-10T09:00:00Z,carol@acme.example,{production},{unpriced('1.5000')}".split(","),
        f"2026-11-12T09:00:00Z,carol@acme.example,{production},{unpriced('2.2500')}".split(","),
        f"2026-11-20T09:00:00Z,bob@acme.example,{production},{unpriced('4.0000')}".split(","),
        f"2026-11-21T09:00:00Z,Backend,{staging},{unpriced('0.2500')}".split(","),
        f"2026-11-22T09:00:00Z,alice@acme.example,{staging},{unpriced('10.0000')}".split(","),
    ]
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="acme_credit-usage-subscription_2026-11.csv"'
    )


def test_the_subscription_total_is_the_balance_used_to_the_credit(world, usage):
    with time_machine.travel(utc(2026, 11, 23, 9), tick=False):
        factories.adjustment(world, "-1.2345", "Goodwill")
    client = logged_in(world.admin)

    used = client.get("/api/v1/balance/").json()["used"]
    rows = csv_rows(client.get(EXPORT, {"scope": "subscription", "format": "csv"}))[1:]
    as_json = client.get(EXPORT, {"scope": "subscription"}).json()

    assert used == "16.7655"
    assert sum(Decimal(row[4]) for row in rows) == Decimal(used)
    assert as_json["totals"] == {"Credits": used, "Cost": None, "Currency": None}
    assert rows[-1] == ["2026-11-23T09:00:00Z", "", "", "", *unpriced("-1.2345").split(",")]


def test_json_has_the_same_columns_paginated_with_totals_and_the_period(world, usage):
    body = export(world.admin, scope="subscription", page_size=2).json()

    assert body["count"] == 5
    assert body["results"][0] == {
        "Timestamp": "2026-11-10T09:00:00Z",
        "User": "carol@acme.example",
        "Environment": "Website / Production",
        "EnvironmentId": str(world.environment.public_id),
        "Credits": "1.5000",
        "BaseCredits": "1.5000",
        "GrantCredits": "0.0000",
        "ExcessCredits": "0.0000",
        "Cost": "",
        "Currency": "",
    }
    assert len(body["results"]) == 2
    assert body["next"].endswith("page=2&page_size=2&scope=subscription")
    assert body["totals"] == {"Credits": "18.0000", "Cost": None, "Currency": None}
    assert body["timeframe"] == {
        "name": "period",
        "start": "2026-10-31T23:00:00Z",
        "end": "2026-11-30T23:00:00Z",
        "first_day": "2026-11-01",
        "last_day": "2026-11-30",
        "timezone": "Europe/Prague",
    }
    assert (body["report"], body["scope"]) == ("credit-usage", "subscription")


# --- Who may export what -------------------------------------------------------------------


def users(response) -> list[str]:
    return [row[1] for row in csv_rows(response)[1:]]


def test_mine_is_your_own_usage_everywhere_or_in_one_environment(world, usage):
    everywhere = export(world.member, scope="mine", format="csv")
    production = export(
        world.admin, scope="mine", environment=world.environment.public_id, format="csv"
    )
    staging = export(
        world.admin, scope="mine", environment=world.other_environment.public_id, format="csv"
    )

    assert users(everywhere) == ["carol@acme.example", "carol@acme.example"]
    assert users(production) == []
    assert users(staging) == ["alice@acme.example"]
    assert 'filename="acme_credit-usage-mine_2026-11.csv"' in everywhere["Content-Disposition"]


def test_project_managers_export_the_environment_they_manage(world, usage):
    response = export(
        world.manager, scope="environment", environment=world.environment.public_id, format="csv"
    )

    assert users(response) == ["carol@acme.example", "carol@acme.example", "bob@acme.example"]


def test_admins_export_any_environment_of_their_subscription(world, usage):
    response = export(
        world.admin, scope="environment", environment=world.other_environment.public_id
    )

    assert [row["User"] for row in response.json()["results"]] == [
        "Backend",
        "alice@acme.example",
    ]


@pytest.mark.parametrize(
    ("user", "params"),
    [
        ("member", {"scope": "environment", "environment": "production"}),
        ("member", {"scope": "subscription"}),
        # bob manages Production but is only a member in Staging.
        ("manager", {"scope": "environment", "environment": "staging"}),
        ("manager", {"scope": "subscription"}),
    ],
)
def test_a_lower_role_gets_a_403(world, usage, user, params):
    environments = {"production": world.environment, "staging": world.other_environment}
    if "environment" in params:
        params["environment"] = environments[params["environment"]].public_id

    response = export(getattr(world, user), **params)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize("scope", ["mine", "environment", "subscription"])
def test_another_subscriptions_environment_is_a_404(world, usage, scope):
    params = {"scope": scope, "environment": world.environment.public_id}
    if scope == "subscription":
        params = {"scope": scope, "subscription": world.subscription.pk}

    response = export(world.outsider, **params)

    assert response.status_code == 404
    assert response.json()["error"]["code"] in {"unknown_environment", "not_found"}


def test_the_outsider_exports_their_own_empty_subscription(world, usage):
    response = export(world.outsider, scope="subscription", format="csv")

    assert csv_rows(response) == [HEADER]
    assert (
        'filename="globex_credit-usage-subscription_2026-11.csv"'
        in (response["Content-Disposition"])
    )


def test_admins_of_a_parent_export_a_sub_account(world, usage):
    labs, environment = usage.record_sub_account()

    by_id = export(world.admin, scope="subscription", subscription=labs.pk, format="csv")
    by_environment = export(world.admin, scope="environment", environment=environment.public_id)

    assert csv_rows(by_id)[1][1:] == [
        "Labs key",
        "Lab / Production",
        str(environment.public_id),
        *unpriced("2.5000").split(","),
    ]
    assert by_environment.json()["subscription"]["name"] == "Acme Labs"


def test_anonymous_callers_get_a_401_and_api_keys_a_403(world, usage):
    anonymous = export(None, scope="mine")
    with_a_key = usage.client.get(EXPORT, {"scope": "subscription"})

    assert anonymous.status_code == 401
    assert (with_a_key.status_code, with_a_key.json()["error"]["code"]) == (
        403,
        "permission_denied",
    )


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({}, "validation_error", "scope"),
        ({"scope": "everything"}, "invalid_scope", None),
        ({"scope": "environment"}, "invalid_scope", None),
        ({"scope": "subscription", "environment": "production"}, "invalid_scope", None),
        ({"scope": "mine", "environment": "not-a-uuid"}, "validation_error", "environment"),
        ({"scope": "mine", "timeframe": "last_month"}, "validation_error", "timeframe"),
        ({"scope": "mine", "format": "pdf"}, "validation_error", "format"),
    ],
)
def test_bad_parameters_are_a_400(world, usage, params, code, field):
    if params.get("environment") == "production":
        params["environment"] = world.environment.public_id

    response = export(world.admin, **params)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    if field:
        assert list(response.json()["error"]["details"]) == [field]


# --- Streaming -------------------------------------------------------------------------------


def test_the_ledger_is_streamed_in_chunks_with_a_constant_number_of_queries(
    world, usage, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(exports, "CHUNK_BYTES", 200)
    client = logged_in(world.admin)

    # Session, user, the default subscription, it with its prices, role, count; SAVEPOINT,
    # COPY, RELEASE (tests run in a transaction, where a savepoint guards the COPY).
    with django_assert_max_num_queries(9):
        response = client.get(EXPORT, {"scope": "subscription", "format": "csv"})
        chunks = list(response.streaming_content)

    assert isinstance(response, StreamingHttpResponse)
    assert len(chunks) > 2
    assert len(b"".join(chunks).decode("utf-8-sig").splitlines()) == 6


@pytest.fixture
def a_long_ledger(world, usage) -> int:
    """60,000 more of carol's events in November, a file of several megabytes: more than the
    sockets hold, so PostgreSQL is still sending when a reader stops early."""
    count = 60_000
    event = CreditEvent.objects.get(subscription=world.subscription, timestamp=utc(2026, 11, 10, 9))
    columns = ", ".join(
        connection.ops.quote_name(field.column)
        for field in CreditEvent._meta.concrete_fields
        if field.name not in ("id", "timestamp")
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO credits_creditevent (timestamp, {columns}) "  # noqa: S608 - our columns
            f"SELECT timestamp + make_interval(secs => n), {columns} "
            "FROM credits_creditevent, generate_series(1, %s) AS n WHERE id = %s",
            [count, event.pk],
        )
    return 5 + count


def test_a_download_given_up_midway_leaves_the_database_usable(world, a_long_ledger, frozen_now):
    """The server closes the stream when the client goes away (emails stop reading a file
    over their budget): the COPY is cancelled, and the transaction around it goes on."""
    export = selectors.credit_usage_export(user=world.admin, scope="subscription")
    chunks = exports.csv_chunks(exports.credit_usage_table(export))
    first, second = next(chunks), next(chunks)
    frozen_now.stop()  # psycopg times its cancel request with the clock
    try:
        chunks.close()
    finally:
        frozen_now.start()

    assert first == (
        b"\xef\xbb\xbfTimestamp,User,Environment,EnvironmentId,Credits,"
        b"BaseCredits,GrantCredits,ExcessCredits,Cost,Currency\r\n"
    )
    assert second.startswith(b"2026-11-10T09:00:00Z,carol@acme.example,Website / Production,")
    response = logged_in(world.admin).get(EXPORT, {"scope": "subscription"})
    assert response.json()["count"] == a_long_ledger


def test_an_empty_period_is_a_header_row(world):
    response = export(world.admin, scope="subscription", format="csv")

    assert b"".join(response.streaming_content) == (
        b"\xef\xbb\xbfTimestamp,User,Environment,EnvironmentId,Credits,"
        b"BaseCredits,GrantCredits,ExcessCredits,Cost,Currency\r\n"
    )
