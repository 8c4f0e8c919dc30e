"""The OpenAPI schema documents every report and export, and validates as OpenAPI 3."""

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

REPORTS = [
    "usage-by-user",
    "usage-by-agent",
    "usage-by-model",
    "usage-by-product",
    "usage-by-feature",
    "usage-by-team",
    "usage-by-environment",
    "usage-by-sub-account",
]


@pytest.fixture
def schema() -> dict:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_valid_openapi_3(schema):
    import openapi_spec_validator as validator

    validator.validate(schema)
    assert schema["openapi"].startswith("3.")


@pytest.mark.parametrize("report", REPORTS)
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
