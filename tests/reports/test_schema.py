"""The OpenAPI schema documents every report and export, and validates as OpenAPI 3."""

import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests import factories
from tests.reports.slugs import REPORT_SLUGS

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema() -> dict:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_valid_openapi_3(schema):
    import openapi_spec_validator as validator

    validator.validate(schema)
    assert schema["openapi"].startswith("3.")


@pytest.mark.parametrize("report", REPORT_SLUGS)
def test_each_report_has_its_parameters_columns_and_both_formats(schema, report):
    operation = schema["paths"][f"/api/v1/reports/{report}/"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    responses = operation["responses"]

    assert {"timeframe", "period", "start", "end", "ordering", "format", "page"} <= set(parameters)
    assert {"team", "agent_type", "model", "created_by", "product", "feature"} <= set(parameters)
    assert len(parameters["timeframe"]["schema"]["enum"]) == 9
    assert set(responses["200"]["content"]) == {"application/json", "text/csv"}
    for status in ("400", "401", "403", "404"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ApiError"
        }
    page = responses["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert {"timeframe", "totals", "results", "count", "next"} <= set(
        schema["components"]["schemas"][page]["properties"]
    )


def test_report_rows_document_their_columns_in_order(schema):
    row = schema["components"]["schemas"]["UsageByProductRow"]

    assert list(row["properties"]) == [
        "product",
        "credits_consumed",
        "avg_credits_per_day",
        "excess_credits",
        "share_percent",
    ]
    assert row["properties"]["credits_consumed"] == {
        "type": "string",
        "format": "decimal",
        "description": "Credits, adjustments included.",
    }


def test_the_export_is_documented(schema):
    operation = schema["paths"]["/api/v1/exports/credit-usage/"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}

    assert parameters["scope"]["required"] is True
    assert parameters["scope"]["schema"]["enum"] == ["environment", "mine", "subscription"]
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert list(schema["components"]["schemas"]["CreditUsageRow"]["properties"]) == [
        "Timestamp",
        "User",
        "Environment",
        "EnvironmentId",
        "Credits",
    ]


@pytest.mark.parametrize("page", ["/api/schema/swagger/", "/api/schema/redoc/"])
def test_swagger_and_redoc_pages(page):
    assert APIClient().get(page).status_code == 200


# --- A stock schemathesis run finds no server error ----------------------------------------------
#
# The same command a person would type (``schemathesis run <schema> --checks ...``), against the
# live test server, once with an API key and once with a subscription admin's token (each on
# fresh data: a token's run revokes the keys it lists and deletes what it finds): every
# operation, every phase (explicit examples, coverage of boundaries and methods the schema does
# not list, fuzzing, stateful sequences), positive and negative data, every check but the ones
# listed below with their reason. A fixed seed makes every run send the same requests.

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SEED = "20261206"
# Found period=0000-01 (500 in reports/timeframes.py) and OPTIONS ?format=csv on the exports
# (500 in the CSV renderer) with these numbers; see test_schema_regressions.py.
MAX_EXAMPLES = "10"
EXCLUDED_CHECKS = {
    "positive_data_acceptance": (
        "values that the schema allows but that name nothing the caller can see are refused by "
        "design: a report filter (created_by, product, team, ...) naming nothing is a 400 "
        "invalid_filter, never an empty report (README), and unknown ids are 404s"
    ),
}
EXCLUDED_CHECKS_FOR = {
    ("/api/v1/events/batch/", "negative_data_rejection"): (
        "a batch judges each event on its own: a batch whose events are invalid is a 200 that "
        "lists each refusal (README, Recording usage), not a 400"
    ),
}


@pytest.fixture
def fuzzed_world(world):
    product = factories.ProductFactory(slug="ai-agent", name="AI agent")
    product.enabled_for.add(world.subscription)
    secret = factories.api_key(world.subscription)[1]
    token = Token.objects.create(user=world.admin).key
    return {"API key": f"Api-Key {secret}", "admin token": f"Token {token}"}


def schemathesis_config() -> str:
    """schemathesis.toml: every check is on by default; these are turned off."""
    lines = ["[checks]", *(f"{check}.enabled = false" for check in EXCLUDED_CHECKS), ""]
    for path, check in EXCLUDED_CHECKS_FOR:
        lines += ["[[operations]]", f'include-path = "{path}"']
        lines += [f"checks.{check}.enabled = false", ""]
    return "\n".join(lines)


def schemathesis_run(live_server, authorization: str, workdir: Path):
    config = workdir / "schemathesis.toml"
    config.write_text(schemathesis_config())
    command = [
        str(SCHEMATHESIS),
        f"--config-file={config}",
        "--no-color",
        "run",
        f"{live_server.url}/api/schema/?format=json",
        f"--header=Authorization: {authorization}",
        "--mode=all",
        "--phases=examples,coverage,fuzzing,stateful",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--generation-database=none",
    ]
    return subprocess.run(  # noqa: S603 - the project's own schemathesis
        command, cwd=workdir, capture_output=True, text=True, check=False, timeout=600
    )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("who", ["API key", "admin token"])
def test_a_stock_schemathesis_run_finds_nothing(who, fuzzed_world, live_server, tmp_path):
    result = schemathesis_run(live_server, fuzzed_world[who], tmp_path)

    summary = result.stdout[result.stdout.rfind("SUMMARY") :]
    assert result.returncode == 0, f"{result.stdout[-20_000:]}{result.stderr}"
    assert "Tested: " in summary, summary
