"""GET /api/v1/reports/<report>/: columns, values, roles, filters, ordering and bad input.

The data is ``record_november``: Acme (Europe/Prague) in November 2026, seen on Monday the
23rd. bob (project manager of Production) is in team Platform, carol (member) in Support.

p95 latencies are within 1% of PostgreSQL's ``percentile_cont(0.95)`` (read from latency
histograms), so they are compared with ``within_one_percent``.
"""

import csv
import io
from datetime import timedelta
from decimal import Decimal, InvalidOperation

import pytest
from django.http import StreamingHttpResponse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import Subscription
from credits.models import Agent
from reports.timeframes import TIMEFRAMES
from tests import factories
from tests.factories import frozen_at, utc
from tests.reports.recorder import logged_in, record_november
from tests.reports.slugs import PER_MEMBER, REPORT_SLUGS, USAGE_BY_PRODUCT_COLUMNS

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 23, 10)
REPORTS = "/api/v1/reports/"


@pytest.fixture
def usage(world, teams):
    return record_november(world)


frozen_now = frozen_at(NOW)


def get(user, report, **params):
    """GET a report as ``user`` (None: anonymous), for this month unless told otherwise."""
    if not {"timeframe", "period", "start", "end"} & set(params):
        params["timeframe"] = "this_month"
    client = logged_in(user) if user else APIClient()
    return client.get(f"{REPORTS}{report}/", params)


# What every report ends with (credits by type and their cost): tests/reports/test_costs.py.
MONEY = ("base_credits", "grant_credits", "cost", "currency")


def results(response) -> list[dict]:
    """The rows, each without the money columns (``MONEY``; ``excess_credits`` stays where a
    report has it of its own)."""
    assert response.status_code == 200, response.json()
    return [_own(row, response) for row in response.json()["results"]]


def totals(response) -> dict:
    return _own(response.json()["totals"], response)


def _own(row: dict, response) -> dict:
    money = set(MONEY)
    if response.json()["report"] not in OWN_EXCESS:
        money.add("excess_credits")
    return {name: value for name, value in row.items() if name not in money}


# The reports with an excess_credits column of their own.
OWN_EXCESS = (
    "usage-by-product",
    "usage-by-feature",
    "usage-by-team",
    "usage-by-environment",
    "usage-by-sub-account",
)


def column(response, name: str) -> list:
    return [row[name] for row in results(response)]


def columns(response, *names: str) -> list[tuple]:
    """Each row's values of ``names``, in order."""
    return [tuple(row[name] for name in names) for row in results(response)]


def csv_rows(response) -> list[list[str]]:
    assert isinstance(response, StreamingHttpResponse)
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))


def within_one_percent(reported: str | None, exact: str) -> bool:
    """The documented precision of p95: within 1% of ``percentile_cont``, given to 0.01."""
    if reported is None:
        return False
    error = abs(Decimal(reported) - Decimal(exact))
    return error <= Decimal(exact) / 100 + Decimal("0.005")


def without_p95(rows: list[dict]) -> list[dict]:
    return [
        {name: value for name, value in row.items() if name != "p95_latency_ms"} for row in rows
    ]


# --- Columns and values ------------------------------------------------------------------------


def test_usage_by_user(world, usage):
    response = get(world.admin, "usage-by-user")

    assert results(response) == [
        {
            "user_email": "alice@acme.example",
            "role": "subscription_admin",
            "user_id": world.admin.pk,
            "total_runs": 1,
            "agents_created": 0,
            "credits_consumed": "10.0000",
            "input_tokens_total": 1000,
            "output_tokens_total": 200,
        },
        {
            "user_email": "bob@acme.example",
            "role": "project_manager",
            "user_id": world.manager.pk,
            "total_runs": 1,
            "agents_created": 1,
            "credits_consumed": "4.0000",
            "input_tokens_total": 1000,
            "output_tokens_total": 200,
        },
        {
            "user_email": "carol@acme.example",
            "role": "member",
            "user_id": world.member.pk,
            "total_runs": 2,
            "agents_created": 0,  # Support bot was created in October
            "credits_consumed": "3.7500",
            "input_tokens_total": 2000,
            "output_tokens_total": 400,
        },
        {
            "user_email": "Backend",
            "role": "api_key",
            "user_id": None,
            "total_runs": 1,
            "agents_created": 0,
            "credits_consumed": "0.2500",
            "input_tokens_total": 1000,
            "output_tokens_total": 200,
        },
    ]
    assert totals(response) == {
        "total_runs": 5,
        "agents_created": 1,
        "credits_consumed": "18.0000",
        "input_tokens_total": 5000,
        "output_tokens_total": 1000,
    }


def test_adjustments_nobody_is_named_for_are_a_row_of_their_own(world, usage):
    factories.adjustment(world, "-1", "Refund", environment=world.environment)

    response = get(world.admin, "usage-by-user", ordering="credits_consumed")

    assert results(response)[0] == {
        "user_email": "No user or API key",
        "role": "",
        "user_id": None,
        "total_runs": 0,  # an adjustment is not a run
        "agents_created": 0,
        "credits_consumed": "-1.0000",
        "input_tokens_total": 0,
        "output_tokens_total": 0,
    }
    assert response.json()["totals"]["credits_consumed"] == "17.0000"


# The fixture's runs fall in three groups, each of one agent and one model (Support bot on
# gpt-5-mini, Translator on gpt-5, runs with neither): what the agent and model reports sum.
RUN_GROUPS = (
    {
        "total_runs": 3,
        "credits_consumed": "13.7500",
        "input_tokens_total": 3000,
        "output_tokens_total": 600,
        "avg_latency_ms": "933.33",
        "error_rate": "0.3333",
    },
    {
        "total_runs": 1,
        "credits_consumed": "4.0000",
        "input_tokens_total": 1000,
        "output_tokens_total": 200,
        "avg_latency_ms": "2000.00",
        "error_rate": "0.0000",
    },
    {
        "total_runs": 1,
        "credits_consumed": "0.2500",
        "input_tokens_total": 1000,
        "output_tokens_total": 200,
        "avg_latency_ms": None,
        "error_rate": "0.0000",
    },
)


def test_usage_by_agent(world, usage):
    response = get(world.admin, "usage-by-agent")

    # percentile_cont over 800, 800, 1200: 800 + 0.9 * 400
    assert within_one_percent(results(response)[0]["p95_latency_ms"], "1160.00")
    assert within_one_percent(results(response)[1]["p95_latency_ms"], "2000.00")
    assert without_p95(results(response)) == [
        {
            "agent_name": "Support bot",
            "agent_id": usage_agent_id("Support bot"),
            "model_used": "gpt-5-mini",
            "agent_type": "single_task",
            # s-1 on the 10th and again on the 12th, s-3 on the 22nd: once per local day
            "total_sessions": 3,
            "avg_runs_per_session": "1.00",
            **RUN_GROUPS[0],
        },
        {
            "agent_name": "Translator",
            "agent_id": usage_agent_id("Translator"),
            "model_used": "gpt-5",
            "agent_type": "multi_step",
            "total_sessions": 1,
            "avg_runs_per_session": "1.00",
            **RUN_GROUPS[1],
        },
        {
            "agent_name": "No agent",
            "agent_id": None,
            "model_used": "",
            "agent_type": "",
            "total_sessions": 0,
            "avg_runs_per_session": None,
            **RUN_GROUPS[2],
        },
    ]
    assert results(response)[2]["p95_latency_ms"] is None


@pytest.mark.parametrize(
    ("reader", "filters"),
    [
        ("member", {}),  # carol's own runs, read from rollups keyed by person and the ledger
        ("admin", {"team": "support"}),  # carol is Support's only member
    ],
)
def test_sessions_and_p95_mean_the_same_whoever_reads(world, usage, teams, reader, filters):
    if "team" in filters:
        filters = {"team": teams[0].pk}

    (row,) = results(get(getattr(world, reader), "usage-by-agent", **filters))

    assert (row["agent_name"], row["total_runs"]) == ("Support bot", 2)
    # s-1 on the 10th and on the 12th: once per local day, as in the admin's report
    assert (row["total_sessions"], row["avg_runs_per_session"]) == (2, "1.00")
    # The ledger of one person is read whole: percentile_cont over 800 and 1200, exactly.
    assert row["p95_latency_ms"] == "1180.00"


def test_a_session_counts_once_on_each_local_day_it_ran(world, usage):
    prague_midnight = utc(2026, 11, 13, 23)  # 00:00 on 14 November in Prague (CET)
    for minutes in (-30, -10, 10):  # 23:30 and 23:50 on the 13th, 00:10 on the 14th
        usage.record(
            at=prague_midnight + timedelta(minutes=minutes),
            agent="Night owl",
            session_id="s-night",
            latency_ms=300,
        )

    for reader in (world.admin, world.member):
        rows = {row["agent_name"]: row for row in results(get(reader, "usage-by-agent"))}
        assert (rows["Night owl"]["total_runs"], rows["Night owl"]["total_sessions"]) == (3, 2)
        assert rows["Night owl"]["avg_runs_per_session"] == "1.50"
    on_the_13th = get(world.admin, "usage-by-agent", start="2026-11-13", end="2026-11-13")
    assert columns(on_the_13th, "agent_name", "total_sessions") == [("Night owl", 1)]


def usage_agent_id(name: str) -> int:
    return Agent.objects.get(name=name).pk


def test_usage_by_model(world, usage):
    response = get(world.admin, "usage-by-model")

    assert [row["model"] for row in results(response)] == ["gpt-5-mini", "gpt-5", "No model"]
    assert within_one_percent(results(response)[0]["p95_latency_ms"], "1160.00")
    assert within_one_percent(results(response)[1]["p95_latency_ms"], "2000.00")
    assert without_p95(results(response)) == [
        {"model": model, **sums}
        for model, sums in zip(("gpt-5-mini", "gpt-5", "No model"), RUN_GROUPS, strict=True)
    ]
    assert results(response)[2]["p95_latency_ms"] is None


def test_usage_by_product(world, usage):
    response = get(world.admin, "usage-by-product")

    assert results(response) == [
        {
            "product": "AI agent",
            "credits_consumed": "18.0000",
            "avg_credits_per_day": "0.7826",  # 18 credits over 23 days, 1 to 23 November
            "excess_credits": "0.0000",
            "share_percent": "100.00",
        }
    ]
    assert totals(response) == {"credits_consumed": "18.0000", "excess_credits": "0.0000"}


def test_usage_by_feature(world, usage):
    response = get(world.admin, "usage-by-feature")

    assert columns(response, "feature", "total_runs", "credits_consumed", "share_percent") == [
        ("chat", 3, "13.7500", "76.39"),
        ("translate", 1, "4.0000", "22.22"),
        ("No feature", 1, "0.2500", "1.39"),
    ]
    assert results(response)[0]["excess_credits"] == "0.0000"
    assert results(response)[0]["input_tokens_total"] == 3000


def test_usage_by_team(world, usage, teams):
    support, platform = teams

    response = get(world.admin, "usage-by-team")

    assert columns(
        response, "team", "team_id", "active_users", "total_runs", "credits_consumed"
    ) == [
        ("No team", None, 1, 2, "10.2500"),  # alice (no team) and the key
        ("Platform", platform.pk, 1, 1, "4.0000"),
        ("Support", support.pk, 1, 2, "3.7500"),
    ]
    assert column(response, "share_percent") == ["56.94", "22.22", "20.83"]


def test_usage_by_environment(world, usage):
    response = get(world.admin, "usage-by-environment")

    assert results(response) == [
        {
            "environment": "Website / Staging",
            "environment_id": str(world.other_environment.public_id),
            "active_users": 1,
            "total_runs": 2,
            "credits_consumed": "10.2500",
            "excess_credits": "0.0000",
            "input_tokens_total": 2000,
            "output_tokens_total": 400,
            "share_percent": "56.94",
        },
        {
            "environment": "Website / Production",
            "environment_id": str(world.environment.public_id),
            "active_users": 2,
            "total_runs": 3,
            "credits_consumed": "7.7500",
            "excess_credits": "0.0000",
            "input_tokens_total": 3000,
            "output_tokens_total": 600,
            "share_percent": "43.06",
        },
    ]


@pytest.fixture
def sub_account(world, usage):
    """Acme Labs, a sub-account of Acme in New York, with 2.5 credits this month."""
    labs, _ = usage.record_sub_account(timezone="America/New_York")
    return labs


def test_usage_by_sub_account_lists_the_parent_and_each_sub_account(world, sub_account):
    response = get(world.admin, "usage-by-sub-account")

    assert columns(
        response, "sub_account", "sub_account_id", "credits_consumed", "share_percent"
    ) == [
        ("Acme", world.subscription.pk, "18.0000", "87.80"),
        ("Acme Labs", sub_account.pk, "2.5000", "12.20"),
    ]
    assert response.json()["totals"]["credits_consumed"] == "20.5000"


def test_sub_accounts_are_included_on_request(world, sub_account):
    without = get(world.admin, "usage-by-product")
    with_them = get(world.admin, "usage-by-product", include_sub_accounts="true")

    assert without.json()["totals"]["credits_consumed"] == "18.0000"
    assert with_them.json()["totals"]["credits_consumed"] == "20.5000"
    assert "Labs key (Acme Labs)" in column(
        get(world.admin, "usage-by-user", include_sub_accounts="true"), "user_email"
    )


def test_the_json_echoes_the_resolved_timeframe_and_paginates(world, usage):
    response = get(world.admin, "usage-by-user", page_size=3)
    body = response.json()

    assert body["timeframe"] == {
        "name": "this_month",
        "start": "2026-10-31T23:00:00Z",
        "end": "2026-11-23T23:00:00Z",
        "first_day": "2026-11-01",
        "last_day": "2026-11-23",
        "timezone": "Europe/Prague",
    }
    assert (body["report"], body["subscription"]) == (
        "usage-by-user",
        {"id": world.subscription.pk, "name": "Acme"},
    )
    assert (body["count"], len(body["results"]), body["previous"]) == (4, 3, None)
    assert body["totals"]["credits_consumed"] == "18.0000"  # all rows, not the page
    second = logged_in(world.admin).get(body["next"])
    assert column(second, "user_email") == ["Backend"]


def test_other_timeframes_select_other_days(world, usage):
    assert (
        get(world.admin, "usage-by-product", timeframe="last_month").json()["totals"][
            "credits_consumed"
        ]
        == "7.0000"
    )
    assert (
        get(world.admin, "usage-by-product", period="2026-10").json()["totals"]["credits_consumed"]
        == "7.0000"
    )
    assert (
        get(world.admin, "usage-by-product", start="2026-11-12", end="2026-11-20").json()["totals"][
            "credits_consumed"
        ]
        == "6.2500"
    )
    assert (
        get(world.admin, "usage-by-product", timeframe="last_week").json()["totals"][
            "credits_consumed"
        ]
        == "14.2500"
    )  # Monday 16 to Sunday 22 November


def test_csv_has_the_same_columns_and_values(world, usage):
    response = get(world.admin, "usage-by-agent", format="csv")

    rows = csv_rows(response)
    assert rows[0] == [
        "agent_name",
        "agent_id",
        "model_used",
        "agent_type",
        "total_runs",
        "total_sessions",
        "avg_runs_per_session",
        "credits_consumed",
        "input_tokens_total",
        "output_tokens_total",
        "avg_latency_ms",
        "p95_latency_ms",
        "error_rate",
        "base_credits",
        "grant_credits",
        "excess_credits",
        "cost",
        "currency",
    ]
    assert rows[1][0] == "Support bot"
    assert rows[1][4:11] == ["3", "3", "1.00", "13.7500", "3000", "600", "933.33"]
    assert within_one_percent(rows[1][11], "1160.00")
    assert rows[1][12] == "0.3333"
    assert rows[3] == [
        "No agent",
        *("", "", ""),
        *("1", "0", "", "0.2500", "1000", "200", "", "", "0.0000"),
        *("0.2500", "0.0000", "0.0000", "", ""),  # no price: no cost
    ]
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="acme_usage-by-agent_2026-11-01_2026-11-23.csv"'
    )


def test_csv_is_also_chosen_by_the_accept_header(world, usage):
    response = logged_in(world.admin).get(
        f"{REPORTS}usage-by-product/", {"period": "2026-10"}, HTTP_ACCEPT="text/csv"
    )

    assert csv_rows(response)[1] == [
        *("AI agent", "7.0000", "0.2258", "0.0000", "100.00"),
        *("7.0000", "0.0000", "", ""),  # base and grant credits; no price, no cost
    ]
    assert 'filename="acme_usage-by-product_2026-10.csv"' in response["Content-Disposition"]


# --- Roles -------------------------------------------------------------------------------------


def test_members_get_only_their_own_usage(world, usage):
    assert column(get(world.member, "usage-by-user"), "user_email") == ["carol@acme.example"]
    assert get(world.member, "usage-by-environment").json()["totals"]["credits_consumed"] == (
        "3.7500"
    )


def test_project_managers_get_their_environments(world, usage):
    by_user = get(world.manager, "usage-by-user")
    by_environment = get(world.manager, "usage-by-environment")

    assert column(by_user, "user_email") == ["bob@acme.example", "carol@acme.example"]
    assert column(by_environment, "environment") == ["Website / Production"]


@pytest.mark.parametrize("report", REPORT_SLUGS[:-1])
@pytest.mark.parametrize(
    ("user", "credits"),
    [
        ("admin", "18.0000"),
        ("manager", "7.7500"),  # everyone's in Production
        ("member", "3.7500"),  # carol's own
        ("outsider", "0.0000"),  # Globex, their own subscription
    ],
)
def test_every_report_shows_each_role_its_share(world, usage, report, user, credits):
    response = get(getattr(world, user), report)

    assert response.json()["totals"]["credits_consumed"] == credits


@pytest.mark.parametrize("report", REPORT_SLUGS)
def test_another_subscription_is_a_404(world, usage, report):
    response = get(world.outsider, report, subscription=world.subscription.pk)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("report", REPORT_SLUGS)
def test_anonymous_callers_get_a_401_and_api_keys_a_403(world, usage, report):
    anonymous = get(None, report)
    with_a_key = usage.client.get(f"{REPORTS}{report}/", {"timeframe": "this_month"})

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    assert with_a_key.status_code == 403
    assert with_a_key.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize("user", ["manager", "member"])
def test_only_admins_get_usage_by_sub_account(world, sub_account, user):
    response = get(getattr(world, user), "usage-by-sub-account")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize("report", ["usage-by-user", "usage-by-team"])
@pytest.mark.parametrize("user", ["admin", "manager", "member"])
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_on_the_free_plan_per_member_reports_are_a_403_naming_the_plans(
    world, usage, report, user, fmt
):
    Subscription.objects.filter(pk=world.subscription.pk).update(plan=Subscription.Plan.FREE)

    response = get(getattr(world, user), report, format=fmt)

    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "plan_required"
    assert "available on the Pro, Premium or Scale plans" in error["message"]
    assert error["details"] == {"report": report, "plan": "free"}
    assert "carol@acme.example" not in response.content.decode()


def test_on_the_free_plan_reports_that_name_nobody_are_answered(world, usage):
    Subscription.objects.filter(pk=world.subscription.pk).update(plan=Subscription.Plan.FREE)

    for report in REPORT_SLUGS:
        if report not in PER_MEMBER:
            response = get(world.admin, report)
            assert response.json()["totals"]["credits_consumed"] == "18.0000", report


def test_the_openapi_document_lists_the_plan_refusal_of_per_member_reports():
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()

    for report in REPORT_SLUGS:
        refusal = schema["paths"][f"{REPORTS}{report}/"]["get"]["responses"]["403"]
        assert refusal["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ApiError"
        }
        per_member = report in PER_MEMBER
        assert ("`plan_required`" in refusal["description"]) is per_member, report


def test_a_personal_token_works_like_a_session(world, usage):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=world.admin).key}")

    response = client.get(f"{REPORTS}usage-by-product/", {"timeframe": "this_month"})

    assert response.json()["totals"]["credits_consumed"] == "18.0000"


# --- Filters -----------------------------------------------------------------------------------


def test_filters_narrow_every_figure(world, usage, teams):
    support, _ = teams

    assert column(get(world.admin, "usage-by-agent", agent_type="multi_step"), "agent_name") == [
        "Translator"
    ]
    assert column(get(world.admin, "usage-by-model", model="gpt-5"), "model") == ["gpt-5"]
    assert column(get(world.admin, "usage-by-user", team=support.pk), "user_email") == [
        "carol@acme.example"
    ]
    assert column(get(world.admin, "usage-by-model", feature="translate"), "model") == ["gpt-5"]
    assert (
        get(world.admin, "usage-by-product", product="ai-agent").json()["totals"][
            "credits_consumed"
        ]
        == "18.0000"
    )


def test_created_by_filters_agents_by_their_creator_whatever_the_case(world, usage):
    response = get(world.admin, "usage-by-agent", created_by="BOB@acme.example")

    assert column(response, "agent_name") == ["Translator"]
    (p95,) = column(response, "p95_latency_ms")
    assert within_one_percent(p95, "2000.00")


@pytest.mark.parametrize(
    "params",
    [
        {"agent_type": "multi_task"},
        {"model": "gpt-6"},
        {"feature": "summarise"},
        {"product": "writing-assistant"},
        {"created_by": "nobody@acme.example"},
        {"created_by": "charlie@globex.example"},  # not visible to alice
        {"team": "abc"},
        {"team": "999999"},
    ],
)
def test_unknown_filter_values_are_a_400_naming_the_filter(world, usage, params):
    assert_refused(get(world.admin, "usage-by-agent", **params), "invalid_filter", params)


@pytest.mark.parametrize(
    "params",
    [
        {"include_sub_accounts": "maybe"},
        {"subscription": "acme"},
        {"agent-type": "single_task"},  # a typo is not silently ignored
        {"format": "xml"},
    ],
)
def test_bad_parameters_are_a_400_naming_the_parameter(world, usage, params):
    assert_refused(get(world.admin, "usage-by-agent", **params), "validation_error", params)


def assert_refused(response, code: str, params: dict) -> None:
    """A 400 with ``code`` whose details name the one parameter given."""
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert list(response.json()["error"]["details"]) == list(params)


def test_a_team_of_another_subscription_is_unknown(world, usage):
    globex_team = factories.TeamFactory(subscription=world.other_subscription)

    response = get(world.admin, "usage-by-user", team=globex_team.pk)

    assert response.status_code == 400
    assert response.json()["error"]["details"] == {
        "team": ["Select a valid choice. That choice is not one of the available choices."]
    }


def test_members_cannot_filter_by_values_only_others_used(world, usage):
    response = get(world.member, "usage-by-model", model="gpt-5")

    assert response.status_code == 400


# --- Ordering ----------------------------------------------------------------------------------


def test_ordering_by_columns_ascending_and_descending(world, usage):
    assert column(get(world.admin, "usage-by-user", ordering="user_email"), "user_email") == [
        "alice@acme.example",
        "Backend",
        "bob@acme.example",
        "carol@acme.example",
    ]
    assert column(
        get(world.admin, "usage-by-user", ordering="-total_runs,user_email"), "user_email"
    ) == ["carol@acme.example", "alice@acme.example", "Backend", "bob@acme.example"]


def test_empty_values_sort_last_both_ways(world, usage):
    ascending = get(world.admin, "usage-by-agent", ordering="p95_latency_ms")
    descending = get(world.admin, "usage-by-agent", ordering="-p95_latency_ms")

    assert column(ascending, "agent_name") == ["Support bot", "Translator", "No agent"]
    assert column(descending, "agent_name") == ["Translator", "Support bot", "No agent"]
    assert column(ascending, "p95_latency_ms")[2] is None


@pytest.mark.parametrize("report", REPORT_SLUGS)
def test_every_column_can_order_a_report(world, sub_account, report):
    client = logged_in(world.admin)
    columns = list(results(get(world.admin, report))[0])

    for name in columns:
        for term in (name, f"-{name}"):
            response = client.get(
                f"{REPORTS}{report}/", {"timeframe": "this_month", "ordering": term}
            )
            values = [row[name] for row in results(response) if row[name] is not None]
            keys = [_comparable(value) for value in values]
            assert keys == sorted(keys, reverse=term.startswith("-")), (report, term)


def _comparable(value):
    if isinstance(value, int):
        return value
    try:
        return Decimal(value)
    except InvalidOperation:
        return value.casefold()


def test_unknown_ordering_is_refused_listing_the_columns(world, usage):
    response = get(world.admin, "usage-by-product", ordering="credits,-share")

    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_ordering",
        "message": "Order by one or more columns, comma-separated; a leading '-' sorts descending.",
        "details": {
            "ordering": ["credits", "-share"],
            "allowed": USAGE_BY_PRODUCT_COLUMNS,
        },
    }


# --- Bad parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"timeframe": ""},
        {"timeframe": "last_year"},
        {"period": "2026-13"},
        {"period": "2027-01"},
        {"start": "2026-11-10", "end": "2026-11-01"},
        {"start": "2026-11-10"},
        {"timeframe": "this_month", "period": "2026-10"},
    ],
)
def test_bad_timeframes_are_a_400_listing_the_allowed_values(world, usage, params):
    response = get(world.admin, "usage-by-product", **params)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_timeframe"
    assert error["details"]["allowed"] == list(TIMEFRAMES)


def test_errors_are_json_even_when_csv_was_asked_for(world, usage):
    response = get(world.admin, "usage-by-agent", timeframe="someday", format="csv")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "invalid_timeframe"


def test_include_sub_accounts_is_not_a_parameter_of_usage_by_sub_account(world, usage):
    response = get(world.admin, "usage-by-sub-account", include_sub_accounts="false")

    assert response.status_code == 400
    assert list(response.json()["error"]["details"]) == ["include_sub_accounts"]


# --- Queries -------------------------------------------------------------------------------


@pytest.mark.parametrize("report", REPORT_SLUGS)
def test_queries_do_not_grow_with_the_data(
    world, usage, teams, report, django_assert_max_num_queries
):
    people = [factories.UserFactory(email=f"writer{n}@acme.example") for n in range(8)]
    for person in people:
        factories.membership(person, "member", environment=world.environment)
    usage.record_batch(
        at=NOW,
        events=[
            {
                "timestamp": utc(2026, 11, 23, 9, n).isoformat(),
                "user": person.email,
                "agent": f"Agent {n}",
                "model": f"model-{n % 3}",
                "feature": f"feature-{n}",
            }
            for n, person in enumerate(people * 3)
        ],
    )
    client = logged_in(world.admin)
    filters = {"model": "gpt-5-mini", "created_by": world.member.email, "team": teams[0].pk}
    if report != "usage-by-sub-account":
        filters["include_sub_accounts"] = "true"

    # Without ?subscription= the default subscription is found first, then read with its
    # prices by its id (a statement a distributed database sends to one node).
    with django_assert_max_num_queries(11):
        response = client.get(f"{REPORTS}{report}/", {"timeframe": "this_month", **filters})
    with django_assert_max_num_queries(8):
        everything = client.get(f"{REPORTS}{report}/", {"timeframe": "this_month"})
    with django_assert_max_num_queries(8):
        as_csv = client.get(f"{REPORTS}{report}/", {"timeframe": "this_month", "format": "csv"})
        b"".join(as_csv.streaming_content)

    assert response.status_code == 200
    assert everything.json()["totals"]["credits_consumed"] == "54.0000"  # 18 + 24 x 1.5


@pytest.mark.parametrize("report", REPORT_SLUGS[:-1])
@pytest.mark.parametrize("reader", ["manager", "member"])
def test_queries_do_not_grow_with_the_data_for_other_roles(
    world, usage, report, reader, django_assert_max_num_queries
):
    usage.record_batch(
        at=NOW,
        events=[
            {
                "timestamp": utc(2026, 11, 20 + n % 3, 9, n).isoformat(),
                "agent": f"Agent {n}",
                "model": f"model-{n % 3}",
                "session_id": f"s-{n % 5}",
                "latency_ms": 100 + n,
            }
            for n in range(30)
        ],
    )
    client = logged_in(getattr(world, reader))

    with django_assert_max_num_queries(8):  # 7 with ?subscription= (see above)
        response = client.get(f"{REPORTS}{report}/", {"timeframe": "this_month"})

    assert response.status_code == 200


def test_a_project_manager_does_not_get_the_names_of_teams_they_may_not_see(world, usage, teams):
    """bob sees carol's usage in Production, but not her team (Support): it is "Other teams"."""
    support, platform = teams

    response = get(world.manager, "usage-by-team")
    refused = get(world.manager, "usage-by-team", team=support.pk)

    assert columns(response, "team", "team_id", "active_users", "credits_consumed") == [
        ("Platform", platform.pk, 1, "4.0000"),
        ("Other teams", None, 1, "3.7500"),
    ]
    assert "Support" not in response.content.decode()
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_filter"
