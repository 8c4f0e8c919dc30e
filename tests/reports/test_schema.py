"""The OpenAPI schema documents every report and export, and validates as OpenAPI 3."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests import factories
from tests.reports.slugs import REPORT_SLUGS, USAGE_BY_PRODUCT_COLUMNS

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

    assert list(row["properties"]) == USAGE_BY_PRODUCT_COLUMNS
    assert row["properties"]["cost"]["type"] == "string"  # money: a decimal string, or null
    assert row["properties"]["cost"]["nullable"] is True
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
    properties = list(schema["components"]["schemas"]["CreditUsageRow"]["properties"])
    assert properties[:5] == ["Timestamp", "User", "Environment", "EnvironmentId", "Credits"]
    assert properties[5:] == ["BaseCredits", "GrantCredits", "ExcessCredits", "Cost", "Currency"]


@pytest.mark.parametrize("page", ["/api/schema/swagger/", "/api/schema/redoc/"])
def test_swagger_and_redoc_pages(page):
    assert APIClient().get(page).status_code == 200


# --- A stock schemathesis run finds nothing ----------------------------------------------------
#
# The command a person would type (``schemathesis run <schema>``, reading the repository's
# schemathesis.toml), against the live test server on the test's scratch database: every check,
# every operation, every phase (explicit examples, coverage of boundaries and of methods the
# schema does not list, fuzzing, stateful sequences), positive and negative data. One run holds
# both credentials: recording usage and the balance with an API key (of another subscription,
# so that the admin's run cannot revoke it), everything else with an admin's token. A fixed seed
# makes every run send the same requests. CI runs a few examples per operation;
# CREDITDESK_FUZZ_DEPTH=full runs the deep one (README, "The deep schemathesis run").
#
# No check is turned off and no operation left out. Where the schema can state a rule, it does
# (a statement's month, non-empty filters, strict money, unknown fields refused), so that the
# stock checks hold the server to it. What OpenAPI cannot state (exactly one timeframe, a
# filter naming something the caller can see, a URL that resolves, ...) is a documented
# business rule: schemathesis.toml adds its status to positive_data_acceptance's expected ones
# for the operations that have it, and for no other (test_schema_regressions.py pins the
# list). A filter naming nothing stays a 400, not the 404 the stock check accepts: the report
# exists, a parameter is wrong. A batch's schema takes any JSON value as an event and
# documents each event's result, because the server judges each event on its own (a limit,
# a closed period or a duplicate refuses that event, never the batch), so negative data
# inside a batch is rightly a 200 with the event refused in `results`.

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
ROOT = Path(__file__).resolve().parents[2]
SEED = "20261206"
DEPTHS = {
    "ci": ["--max-examples=3", "--no-shrink"],
    "full": ["--max-examples=50"],
}
# In CI the coverage phase (boundary and invalid values of every parameter, nine tenths of the
# run) skips the operations that repeat another's parameters: the reports share one view and
# one set of parameters (usage-by-product stands for them), and a schedule's PUT and PATCH take
# the body of its POST on an id that does not exist. The other phases run on every operation.
CI_ONLY = """
[[operations]]
include-path-regex = "^/api/v1/reports/(?!usage-by-product/)"
phases.coverage.enabled = false

[[operations]]
include-operation-id = ["report_schedules_update", "report_schedules_partial_update"]
phases.coverage.enabled = false
"""


# Recording usage and the balance are what machines do: called with the API key.
MACHINE_OPERATIONS = "^/api/v1/(events/|balance/)"


@pytest.fixture
def credentials(world) -> dict:
    product = factories.ProductFactory(slug="ai-agent", name="AI agent")
    product.enabled_for.add(world.other_subscription)
    return {
        "API key": f"Api-Key {factories.api_key(world.other_subscription)[1]}",
        "admin token": f"Token {Token.objects.create(user=world.admin).key}",
    }


def schemathesis_config(api_key: str, depth: str) -> str:
    """The repository's schemathesis.toml, and the API key for the machines' operations."""
    machines = (
        f'[[operations]]\ninclude-path-regex = "{MACHINE_OPERATIONS}"\n'
        f'headers = {{ Authorization = "{api_key}" }}\n'
    )
    config = f"{(ROOT / 'schemathesis.toml').read_text()}\n{machines}"
    return config + CI_ONLY if depth == "ci" else config


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_stock_schemathesis_run_finds_nothing(credentials, live_server, tmp_path):
    depth = os.environ.get("CREDITDESK_FUZZ_DEPTH", "ci")
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config(credentials["API key"], depth))
    command = [
        str(SCHEMATHESIS),
        f"--config-file={config}",
        "--no-color",
        "run",
        f"{live_server.url}/api/schema/?format=json",
        f"--header=Authorization: {credentials['admin token']}",
        "--checks=all",  # the default, said out loud
        "--phases=examples,coverage,fuzzing,stateful",
        *DEPTHS[depth],
        f"--seed={SEED}",
        "--workers=1",
        "--generation-database=none",
    ]
    result = subprocess.run(  # noqa: S603 - the project's own schemathesis
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )

    summary = result.stdout[result.stdout.rfind("SUMMARY") :]
    assert result.returncode == 0, f"{result.stdout[-20_000:]}{result.stderr}"
    assert "Tested: " in summary, summary
