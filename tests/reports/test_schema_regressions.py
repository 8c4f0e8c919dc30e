"""Every server error the schema fuzzing (tests/reports/test_schema.py) or a stock schemathesis
run found, as the request that found it: each is now a 4xx in the JSON error shape, or a
JSON answer, never a 500."""

import re
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests import factories
from tests.reports.slugs import REPORT_SLUGS

pytestmark = pytest.mark.django_db

EXPORT = "/api/v1/exports/credit-usage/"


@pytest.fixture
def admin_api(world):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=world.admin).key}")
    return client


def refused(response, code: str) -> dict:
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    return error


@pytest.mark.parametrize("report", REPORT_SLUGS)
@pytest.mark.parametrize("period", ["0000-01", "0001-01"])
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_period_in_the_years_0_and_1_is_a_400(admin_api, report, period, fmt):
    """Was: 500, ``ValueError: year 0 is out of range`` in reports/timeframes.py (and for the
    year 1, no day before its first local day east of UTC)."""
    response = admin_api.get(f"/api/v1/reports/{report}/", {"period": period, "format": fmt})

    assert refused(response, "invalid_timeframe")["details"]["parameter"] == "period"


def test_the_earliest_period_that_has_days_before_it_is_answered(admin_api):
    response = admin_api.get("/api/v1/reports/usage-by-user/", {"period": "0002-01"})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "path", [EXPORT, *(f"/api/v1/reports/{report}/" for report in REPORT_SLUGS)]
)
@pytest.mark.parametrize("negotiation", [{"format": "csv"}, {"HTTP_ACCEPT": "text/csv"}])
def test_options_when_csv_was_asked_for_describes_the_endpoint_in_json(
    admin_api, path, negotiation
):
    """Was: 500, ``'dict' object has no attribute 'columns'`` in reports/exports.py: the
    OPTIONS description went through the CSV renderer."""
    query = "?format=csv" if "format" in negotiation else ""
    headers = {key: value for key, value in negotiation.items() if key != "format"}
    response = admin_api.options(path + query, **headers)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["name"]


def test_export_errors_are_json_when_csv_was_asked_for(admin_api):
    response = admin_api.get(EXPORT, {"scope": "environment", "format": "csv"})

    refused(response, "invalid_scope")


@pytest.mark.parametrize(("value", "status"), [("0", 400), ("x", 400), ("999999", 404)])
def test_an_api_keys_balance_checks_the_subscription_parameter(world, value, status):
    """Was: 200, the parameter ignored for API keys although the schema says ids start at 1
    (found by the stock run with an API key)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {factories.api_key(world.subscription)[1]}")

    assert client.get("/api/v1/balance/", {"subscription": value}).status_code == status
    own = client.get("/api/v1/balance/", {"subscription": world.subscription.pk})
    assert own.status_code == 200
    assert own.json()["subscription"]["id"] == world.subscription.pk


@pytest.mark.parametrize(
    "path", ["/api/v1/api-keys/", "/api/v1/subscription/", "/api/v1/reports/usage-by-user/"]
)
def test_an_empty_subscription_parameter_is_a_400(admin_api, path):
    """Was: 200 for the first subscription, as if the parameter were absent, although the schema
    says an integer from 1 (found by the deep stock schemathesis run)."""
    response = admin_api.get(path, {"subscription": "", "timeframe": "this_month"})

    assert refused(response, "validation_error")["details"]["subscription"]


def test_an_empty_timeframe_parameter_is_a_400(admin_api):
    """Was: 200, ``start=`` read as absent beside ``timeframe`` (found by the deep run)."""
    response = admin_api.get(
        "/api/v1/reports/usage-by-model/", {"start": "", "timeframe": "last_7_days"}
    )

    assert refused(response, "invalid_timeframe")["details"]["parameter"] == "start"


# --- What the schema states, the server follows (schemathesis's positive_data_acceptance) -----
#
# Each rule below was a schema-valid request the server refused with a 400; the schema now
# states it, so that the operation needs no business-rule allowance for it in
# schemathesis.toml.


@pytest.fixture
def schema() -> dict:
    return APIClient().get("/api/schema/", {"format": "json"}).json()


def _parameter(schema: dict, path: str, name: str) -> dict:
    (found,) = (p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == name)
    return found["schema"]


@pytest.mark.parametrize(
    "month", ["0001-12", "0002-01", "0999-06", "2026-11", "9998-12", "9999-01", "0000-01"]
)
def test_a_statement_month_is_invalid_exactly_when_the_schema_refuses_it(schema, admin_api, month):
    """Was: ``0000-01`` matched the month's pattern (any four digits) and got ``400
    invalid_month``; the pattern now holds only the years a billing period can hold."""
    pattern = _parameter(schema, "/api/v1/statements/{month}/", "month")["pattern"]
    response = admin_api.get(f"/api/v1/statements/{month}/")

    if re.fullmatch(pattern, month):
        assert response.status_code in (404, 409), response.content  # no period, or open
    else:
        refused(response, "invalid_month")


@pytest.mark.parametrize("name", ["product", "feature", "model", "api_key"])
def test_an_empty_usage_filter_is_refused_by_the_schema_as_by_the_server(schema, admin_api, name):
    """Was: ``feature=`` was schema-valid, and a ``400 invalid_filter``."""
    assert _parameter(schema, "/api/v1/usage/", name)["minLength"] == 1

    error = refused(admin_api.get("/api/v1/usage/", {name: ""}), "invalid_filter")
    assert name in error["details"]


@pytest.mark.parametrize(
    "value",
    ["", "-", ".", "5", "5.", ".5", "12.25", "99999.99", "100000", "-1", "5.123", "1_5", 0, 90],
)
def test_an_alert_thresholds_schema_is_what_the_server_reads(schema, value):
    """Was: drf-spectacular's pattern for a decimal (``^-?\\d{0,5}(?:\\.\\d{0,2})?$``) let
    ``""``, ``"-"`` and ``"."`` through, which the server refuses ("A valid number is
    required"), and left out the JSON numbers it takes."""
    from rest_framework.exceptions import ValidationError

    from credits.alert_rules_api import PercentField

    string, integer = schema["components"]["schemas"]["AlertRuleRequest"]["properties"][
        "thresholds"
    ]["items"]["oneOf"]
    if isinstance(value, int):
        in_schema = integer["minimum"] <= value <= integer["maximum"]
    else:
        in_schema = re.fullmatch(string["pattern"], value) is not None
    try:
        PercentField().run_validation(value)
    except ValidationError:
        read = False
    else:
        read = True

    assert read == in_schema


def test_a_batchs_results_are_documented_as_sent(schema, world, product):
    """Each event's outcome in ``results`` (``index``, ``status``, then ``event`` or
    ``error``) is in the schema, not an object of anything."""
    from openapi_schema_validator import OAS30Validator

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {factories.api_key(world.subscription)[1]}")
    event = {
        "idempotency_key": "op-1",
        "environment": str(world.environment.public_id),
        "user": world.member.email,
        "product": product.slug,
        "credits": "1.5",
    }
    response = client.post(
        "/api/v1/events/batch/", {"events": [event, {"credits": "1_5"}, None]}, format="json"
    )

    body = response.json()
    assert [result["status"] for result in body["results"]] == [201, 400, 400]
    validator = OAS30Validator(
        {"$ref": "#/components/schemas/BatchEventResult", "components": schema["components"]}
    )
    for item in body["results"]:
        validator.validate(item)
    result = schema["components"]["schemas"]["BatchEventResult"]
    assert set(result["properties"]) == {"index", "status", "event", "error"}
    assert set(result["required"]) == {"index", "status"}


# Operations whose schema-valid requests a documented business rule may refuse, and with what
# (schemathesis.toml); every other operation keeps the stock statuses.
BUSINESS_RULES = {
    **{f"GET /api/v1/reports/{report}/": {"400"} for report in REPORT_SLUGS},
    f"GET {EXPORT}": {"400"},
    "GET /api/v1/usage/": {"400"},
    "POST /api/v1/auth/token/": {"400"},
    "POST /api/v1/api-keys/": {"400"},
    "POST /api/v1/grants/": {"400", "422"},
    "POST /api/v1/events/": {"402", "422"},
    **{
        label: {"400"}
        for collection, item in [
            ("report-schedules", "{schedule_id}"),
            ("alert-rules", "{rule_id}"),
            ("webhooks", "{endpoint_id}"),
        ]
        for label in (
            f"POST /api/v1/{collection}/",
            f"PUT /api/v1/{collection}/{item}/",
            f"PATCH /api/v1/{collection}/{item}/",
        )
    },
    "POST /api/v1/webhooks/{endpoint_id}/rotate/": {"400"},
    "POST /api/v1/webhooks/{endpoint_id}/test/": {"400"},
}


def test_only_the_operations_with_business_rules_accept_more_than_the_stock_statuses(schema):
    """The allowances in schemathesis.toml stay where a documented rule needs them: a read, a
    delete, a statement or a batch that the schema calls valid is never a 400."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig

    root = Path(__file__).resolve().parents[2]
    loaded = schemathesis.openapi.from_dict(
        schema, config=SchemathesisConfig.from_path(root / "schemathesis.toml")
    )
    stock = set(
        SchemathesisConfig().projects.default.checks.positive_data_acceptance.expected_statuses
    )
    added = {}
    for result in loaded.get_all_operations():
        operation = result.ok()
        statuses = loaded.config.checks_config_for(operation=operation)
        extra = set(statuses.positive_data_acceptance.expected_statuses) - stock
        if extra:
            added[operation.label] = extra

    assert added == BUSINESS_RULES
    for label, extra in added.items():
        method, path = label.split(" ")
        documented = schema["paths"][path][method.lower()]["responses"]
        assert extra <= set(documented), label
