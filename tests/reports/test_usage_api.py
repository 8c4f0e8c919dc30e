"""``GET /api/v1/usage/``: usage per hour, day or month grouped by any dimensions, scoped by
``visible_to`` for people and API keys, equal to the reports, refusing bad input in the one
error shape. Acme's usage is ``record_november``'s (Europe/Prague)."""

import csv
import io
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.models import Subscription
from tests import factories
from tests.factories import utc
from tests.reports.recorder import EventRecorder, logged_in, record_november

pytestmark = pytest.mark.django_db

URL = "/api/v1/usage/"
NOW = utc(2026, 11, 25, 12)
NOVEMBER = {"from": "2026-11-01", "to": "2026-11-24"}


@pytest.fixture
def november(world):
    return record_november(world)


def get(client, **params):
    with time_machine.travel(NOW, tick=False):
        return client.get(URL, params, HTTP_ACCEPT="application/json")


def ok(client, **params) -> dict:
    response = get(client, **params)
    assert response.status_code == 200, response.content
    return response.json()


def credits_by(body: dict, column: str) -> dict:
    found: dict = {}
    for row in body["results"]:
        found[row[column]] = found.get(row[column], Decimal(0)) + Decimal(row["credits"])
    return found


def report(client, slug: str, column: str) -> tuple[dict, dict]:
    response = client.get(
        f"/api/v1/reports/{slug}/",
        {"start": "2026-11-01", "end": "2026-11-24", "page_size": 500},
        HTTP_ACCEPT="application/json",
    )
    body = response.json()
    rows = {row[column]: Decimal(row["credits_consumed"]) for row in body["results"]}
    return rows, body["totals"]


def test_user_and_model_per_hour_day_and_month_equal_the_reports(world, november):
    admin = logged_in(world.admin)
    by_user, totals = report(admin, "usage-by-user", "user_id")
    by_model, _ = report(admin, "usage-by-model", "model")

    for window in ("hour", "day", "month"):
        body = ok(admin, window=window, group_by="user,model", page_size=1000, **NOVEMBER)
        assert body["totals"]["credits"] == totals["credits_consumed"] == "18.0000"
        assert sum(Decimal(row["credits"]) for row in body["results"]) == Decimal(18)
        users = credits_by(body, "user_id")
        assert {user: credits for user, credits in users.items() if user} == {
            user: credits for user, credits in by_user.items() if user
        }
        models = credits_by(body, "model")
        assert models == {(name if name != "No model" else None): c for name, c in by_model.items()}

    hours = ok(admin, window="hour", group_by="user,model", **NOVEMBER)["results"]
    assert hours[0] == {
        "window_start": "2026-11-10T10:00:00+01:00",
        "user_id": world.member.pk,
        "user": "carol@acme.example",
        "model": "gpt-5-mini",
        "credits": "1.5000",
        "excess_credits": "0.0000",
        "grant_credits": "0.0000",
        "runs": 1,
        "failed_runs": 0,
        "input_tokens": 1000,
        "output_tokens": 200,
        "cost": None,  # no price (money: tests/reports/test_costs.py)
        "currency": None,
    }
    assert [row["window_start"] for row in ok(admin, window="month")["results"]] == [
        "2026-10-01",
        "2026-11-01",
    ]


def test_every_grouping_names_its_keys_and_credit_types_add_up(world, november, teams):
    admin = logged_in(world.admin)
    every = "user,team,environment,project,product,feature,agent,model,api_key,sub_account"
    body = ok(admin, window="day", group_by=f"{every},credit_type", **NOVEMBER)

    assert body["count"] == 3 * 5  # five groups, a base, a grant and an excess row each
    assert body["totals"]["credits"] == "18.0000"
    first, grant, excess = body["results"][:3]
    assert [row["credit_type"] for row in (first, grant, excess)] == ["base", "grant", "excess"]
    assert (grant["credits"], grant["runs"]) == ("0.0000", 0)
    assert (excess["credits"], excess["runs"]) == ("0.0000", 0)
    assert first["team"] == "Support" and first["project"] == "Website"
    assert first["environment"] == "Website / Production"
    assert first["environment_id"] == str(world.environment.public_id)
    assert first["product_id"] == "ai-agent" and first["agent"] == "Support bot"
    assert first["api_key"] == "Backend" and first["sub_account"] == "Acme"
    alone = next(row for row in body["results"] if row["user_id"] is None)
    assert (alone["team_id"], alone["agent_id"], alone["model"]) == (None, None, None)

    filtered = ok(admin, group_by="model", environment=str(world.other_environment.public_id))
    assert credits_by(filtered, "model") == {None: Decimal("0.25"), "gpt-5-mini": Decimal(10)}
    assert ok(admin, credit_type="excess", **NOVEMBER)["totals"]["credits"] == "0.0000"


def test_csv_has_the_same_columns_and_rows_with_a_byte_order_mark(world, november):
    admin = logged_in(world.admin)
    params = {"window": "day", "group_by": "user,feature", **NOVEMBER}
    with time_machine.travel(NOW, tick=False):
        response = admin.get(URL, {**params, "format": "csv"})
    content = b"".join(response.streaming_content).decode()

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert content.startswith("\ufeffwindow_start,user_id,user,feature,credits,")
    rows = list(csv.DictReader(io.StringIO(content.removeprefix("\ufeff"))))
    body = ok(admin, **params)
    assert [row["credits"] for row in rows] == [row["credits"] for row in body["results"]]


def test_environments_and_products_per_month_are_local_months_from_monthly_rows(world, november):
    """Months are Prague's: 00:30 on 1 November there is still October in UTC. An admin's
    year by environment and product reads a rollup's monthly rows, never a year of daily
    rows, so it costs groups x months whatever the events; a project manager reads the same
    figures for their environment."""
    writing = factories.ProductFactory(slug="writing-assistant", name="Writing assistant")
    writing.enabled_for.add(world.subscription)
    staging = str(world.other_environment.public_id)
    november.record(
        at=utc(2026, 10, 31, 23, 30),
        user=world.admin.email,
        environment=staging,
        product="writing-assistant",
        credits="3",
    )
    months = {"window": "month", "group_by": "environment,product", "to": "2026-11-24"}

    with CaptureQueriesContext(connection) as queries:
        body = ok(logged_in(world.admin), **months)

    assert {
        (row["window_start"], row["environment"], row["product_id"]): row["credits"]
        for row in body["results"]
    } == {
        ("2026-10-01", "Website / Production", "ai-agent"): "7.0000",
        ("2026-11-01", "Website / Production", "ai-agent"): "7.7500",
        ("2026-11-01", "Website / Staging", "ai-agent"): "10.2500",
        ("2026-11-01", "Website / Staging", "writing-assistant"): "3.0000",
    }
    assert body["totals"]["credits"] == "28.0000"
    assert not [query["sql"] for query in queries if "credits_dailyusage" in query["sql"]]
    days = ok(logged_in(world.admin), **{**months, "window": "day", "from": "2026-10-01"})
    assert days["totals"] == body["totals"]

    manager = ok(logged_in(world.manager), **months)
    assert [(row["window_start"], row["credits"]) for row in manager["results"]] == [
        ("2026-10-01", "7.0000"),
        ("2026-11-01", "7.7500"),
    ]


# --- Who sees what ----------------------------------------------------------------------------


def test_another_subscription_gets_nothing_and_its_ids_are_unknown(world, november):
    outsider = logged_in(world.outsider)
    _, globex_key = factories.api_key(world.other_subscription)
    key = APIClient()
    key.credentials(HTTP_AUTHORIZATION=f"Api-Key {globex_key}")
    acme = world.subscription.pk

    for client in (outsider, key):
        assert get(client, subscription=acme).status_code == 404
        assert get(client, subscription=acme).json()["error"]["code"] == "not_found"
        assert ok(client, group_by="model", **NOVEMBER)["totals"]["credits"] == "0.0000"

    admin = logged_in(world.admin)
    foreign = get(admin, environment=str(world.foreign_environment.public_id))
    unknown = get(admin, environment="00000000-0000-0000-0000-000000000000")
    assert foreign.status_code == unknown.status_code == 400
    assert foreign.json()["error"]["code"] == "invalid_filter"
    for name, theirs, nobody in (
        ("user", world.outsider.pk, 999_999),
        ("project", world.foreign_environment.project_id, 999_999),
    ):
        assert (
            get(admin, **{name: theirs}).json()["error"]["message"]
            == (get(admin, **{name: nobody}).json()["error"]["message"])
            == "Some filters are invalid."
        )


def test_members_managers_and_keys_see_their_own_scope(world, november):
    member = ok(logged_in(world.member), group_by="user", **NOVEMBER)
    assert {row["user"] for row in member["results"]} == {"carol@acme.example"}
    assert member["totals"]["credits"] == "3.7500"
    _, reported = report(logged_in(world.member), "usage-by-model", "model")
    assert reported["credits_consumed"] == member["totals"]["credits"]
    others = get(logged_in(world.member), group_by="user", user=world.admin.pk, **NOVEMBER)
    assert others.status_code == 400 or others.json()["totals"]["credits"] == "0.0000"

    manager = ok(logged_in(world.manager), group_by="environment", **NOVEMBER)
    assert {row["environment"] for row in manager["results"]} == {"Website / Production"}

    production_key = EventRecorder.key_client(world.subscription, environment=world.environment)
    keyed = ok(production_key, group_by="api_key", **NOVEMBER)
    assert keyed["totals"]["credits"] == "7.7500"  # Production's usage, not Staging's
    assert {row["api_key"] for row in keyed["results"]} == {"Backend"}


def test_per_person_groupings_need_a_plan_with_team_views(world, november):
    Subscription.objects.filter(pk=world.subscription.pk).update(plan=Subscription.Plan.FREE)
    admin = logged_in(world.admin)

    refused = get(admin, group_by="model,user")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "plan_required"
    assert get(admin, group_by="team").status_code == 403
    assert ok(admin, group_by="model", **NOVEMBER)["totals"]["credits"] == "18.0000"


# --- Bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"group_by": "user,colour"}, "group_by"),
        ({"group_by": "user,user"}, "group_by"),
        ({"window": "week"}, "window"),
        ({"from": "2026-11-10", "to": "2026-11-01"}, "from"),
        ({"from": "2025-01-01", "to": "2026-11-01"}, "to"),  # more than 366 days
        ({"window": "hour", "from": "2026-10-01", "to": "2026-11-20"}, "to"),  # > 31 days
        ({"window": "hour", "from": "2026-08-01", "to": "2026-08-02"}, "from"),  # not kept
        ({"window": "hour", "from": "2026-11-20T10:30:00+01:00"}, "from"),  # not on the hour
        ({"window": "day", "from": "2026-11-20T10:00:00"}, "from"),  # days take days
        ({"from": "yesterday"}, "from"),
    ],
)
def test_bad_ranges_and_groupings_are_400s_naming_the_parameter(world, params, parameter):
    response = get(logged_in(world.admin), **params)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["details"]["parameter"]) == ("invalid_usage_query", parameter)


@pytest.mark.parametrize(
    "params",
    [
        {"group_by": "user\x00"},
        {"colour": "red"},
        {"agent": "abc"},
        {"credit_type": "bonus"},
        {"format": "xml"},
        {"page_size": "null"},
        {"page": "0"},
        {"environment": ""},
    ],
)
def test_other_bad_input_is_a_400_in_the_one_error_shape(world, params):
    response = get(logged_in(world.admin), **params)

    assert response.status_code == 400
    assert set(response.json()["error"]) == {"code", "message", "details"}


# --- Hours across a DST change, and the cost --------------------------------------------------


def test_hours_across_the_end_of_dst_in_auckland_are_distinct_windows(world):
    world.subscription.timezone = "Pacific/Auckland"
    world.subscription.save()
    recorder = EventRecorder(world)
    # NZDT (UTC+13) ends at 03:00 on 5 April 2026: 02:00 to 03:00 happens twice.
    for hour in (12, 13, 14, 15):
        recorder.record(at=utc(2026, 4, 4, hour, 30), credits="1")

    with time_machine.travel(utc(2026, 4, 6), tick=False):
        client = logged_in(world.admin)
        body = client.get(URL, {"window": "hour", "from": "2026-04-05", "to": "2026-04-05"})
        day = client.get(URL, {"window": "day", "from": "2026-04-05", "to": "2026-04-05"})

    assert body.json()["from"] == "2026-04-05T00:00:00+13:00"
    assert body.json()["to"] == "2026-04-06T00:00:00+12:00"  # 25 hours
    assert [(row["window_start"], row["credits"]) for row in body.json()["results"]] == [
        ("2026-04-05T01:00:00+13:00", "1.0000"),
        ("2026-04-05T02:00:00+13:00", "1.0000"),
        ("2026-04-05T02:00:00+12:00", "1.0000"),
        ("2026-04-05T03:00:00+12:00", "1.0000"),
    ]
    assert day.json()["results"][0]["credits"] == body.json()["totals"]["credits"] == "4.0000"


def test_queries_are_bounded_whatever_the_groupings(world, november, django_assert_max_num_queries):
    admin = logged_in(world.admin)
    every = "user,team,environment,project,product,feature,agent,model,api_key,sub_account"
    filters = {"user": world.member.pk, "environment": str(world.environment.public_id)}

    for window in ("hour", "day", "month"):
        with django_assert_max_num_queries(14):
            ok(admin, window=window, group_by=f"{every},credit_type", model="gpt-5-mini", **filters)


def test_the_openapi_document_describes_it():
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/usage/"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}

    assert {"window", "group_by", "from", "to", "format", "page", "credit_type"} <= set(parameters)
    assert {"user", "team", "environment", "project", "agent", "api_key", "sub_account"} <= set(
        parameters
    )
    assert sorted(parameters["window"]["schema"]["enum"]) == ["day", "hour", "month"]
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    for status in ("400", "401", "403", "404"):
        assert operation["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ApiError"
        }
    row = schema["components"]["schemas"]["UsageRow"]["properties"]
    assert row["credits"]["type"] == "string" and row["credits"]["format"] == "decimal"
