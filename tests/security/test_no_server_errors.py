"""The hostile requests of issue 23 get a 4xx, never a 5xx, and API errors are JSON.

* A NUL character or an unpaired surrogate in any kind of parameter (query filter, JSON
  field, field name, auth token and header, admin search and autocomplete, page filters) is a
  400 that names where it was and does not repeat it.
* Timestamps and periods the product cannot place in a billing period (the years 1 and 9999,
  in any time zone) are a 400 naming the field, alone and inside a batch, where the other
  events are recorded as usual; old events keep their ``period_closed`` answer.
* A URL under /api/ that matches no route answers in JSON; so does an error when CSV was
  asked for.
* Every write refuses fields it does not know.
"""

import json
from urllib.parse import urlencode

import pytest
import time_machine
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from credits.models import CreditEvent
from reports.models import ReportSchedule
from tests import factories

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events/"
BATCH = "/api/v1/events/batch/"
NOW = factories.utc(2026, 11, 23, 10, 0)
NUL = "\x00"
SURROGATE = "\ud800"
UNSTORABLE = [NUL, SURROGATE, f"ok{NUL}", f"{SURROGATE}tail"]


@pytest.fixture(autouse=True)
def fixed_time():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def product(world):
    product = factories.ProductFactory(slug="ai-agent", name="AI agent")
    product.enabled_for.add(world.subscription)
    return product


@pytest.fixture
def key_client(world, product):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {factories.api_key(world.subscription)[1]}")
    return client


@pytest.fixture
def admin_api(world):
    client = APIClient()
    client.force_authenticate(world.admin)
    return client


def usage(world, **overrides) -> dict:
    return {
        "idempotency_key": "op-1",
        "environment": str(world.environment.public_id),
        "product": "ai-agent",
        "credits": "1.5",
        **overrides,
    }


def send_json(client, method: str, url: str, body) -> object:
    """``body`` as JSON text: json.dumps writes a lone surrogate as the escape ``\\ud800``."""
    return getattr(client, method)(url, json.dumps(body), content_type="application/json")


def refused(response, status: int = 400) -> dict:
    """The error's details, after checking the status and the one JSON error shape."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def unstorable_refused(response, where: str) -> None:
    error = refused(response)
    assert error["code"] == "validation_error"
    assert where in error["details"], error
    assert NUL not in response.content.decode() and "\\u0000" not in response.content.decode()
    assert "ud800" not in response.content.decode().lower()


# --- NUL and unpaired surrogates ------------------------------------------------------------------


@pytest.mark.parametrize("value", [NUL, f"alice{NUL}@acme.example"])
@pytest.mark.parametrize(
    "name", ["created_by", "model", "agent_type", "feature", "product", "team"]
)
def test_a_nul_in_a_report_filter_is_a_400(world, admin_api, name, value):
    for report in ("usage-by-user", "usage-by-feature"):
        response = admin_api.get(
            f"/api/v1/reports/{report}/", {"timeframe": "this_month", name: value}
        )
        unstorable_refused(response, name)
    response = admin_api.get(
        "/api/v1/reports/usage-by-user/", {"timeframe": "this_month", name: value, "format": "csv"}
    )
    unstorable_refused(response, name)


@pytest.mark.parametrize("name", ["user", "environment", "subscription"])
def test_a_nul_in_a_balance_parameter_is_a_400(admin_api, key_client, name):
    unstorable_refused(admin_api.get("/api/v1/balance/", {name: NUL}), name)
    unstorable_refused(key_client.get("/api/v1/balance/", {name: NUL}), name)


def test_a_nul_in_a_parameter_name_or_the_path_is_a_400(admin_api):
    unstorable_refused(
        admin_api.get("/api/v1/reports/usage-by-user/?time%00frame=x"), "non_field_errors"
    )
    unstorable_refused(admin_api.get("/api/v1/api-keys/a%00b/revoke/"), "path")


@pytest.mark.parametrize("value", UNSTORABLE)
@pytest.mark.parametrize("field", ["status", "user", "product", "feature", "agent", "timestamp"])
def test_unstorable_text_in_an_event_field_is_a_400_and_stores_nothing(
    world, key_client, field, value
):
    response = send_json(key_client, "post", EVENTS, usage(world, **{field: value}))

    unstorable_refused(response, field)
    assert not CreditEvent.objects.exists()


@pytest.mark.parametrize("value", UNSTORABLE)
def test_unstorable_text_in_a_field_name_is_a_400(world, key_client, admin_api, value):
    response = send_json(key_client, "post", EVENTS, usage(world, **{value: "x"}))
    unstorable_refused(response, "non_field_errors")

    response = send_json(admin_api, "patch", "/api/v1/subscription/", {value: "soft"})
    unstorable_refused(response, "non_field_errors")


@pytest.mark.parametrize("value", UNSTORABLE)
@pytest.mark.parametrize(
    ("field", "valid"),
    [
        ("frequency", "weekly"),
        ("weekday", "monday"),
        ("scope", "subscription"),
        ("attached_reports", ["usage-by-user"]),
        ("recipients", ["finance@acme.example"]),
        ("name", "Weekly"),
    ],
)
def test_unstorable_text_in_a_schedule_field_is_a_400(world, admin_api, field, valid, value):
    body = {"name": "Weekly", "recipients": ["finance@acme.example"]}
    hostile = [value] if isinstance(valid, list) else value
    where = f"{field}[0]" if isinstance(valid, list) else field

    response = send_json(admin_api, "post", "/api/v1/report-schedules/", {**body, field: hostile})

    unstorable_refused(response, where)
    assert not ReportSchedule.objects.exists()


@pytest.mark.parametrize("value", UNSTORABLE)
def test_unstorable_text_in_subscription_settings_is_a_400(world, admin_api, value):
    response = send_json(admin_api, "patch", "/api/v1/subscription/", {"limit_mode": value})

    unstorable_refused(response, "limit_mode")


@pytest.mark.parametrize("value", UNSTORABLE)
@pytest.mark.parametrize("field", ["email", "password"])
def test_unstorable_text_when_asking_for_a_token_is_a_400_without_logging_in(field, value):
    body = {"email": "alice@acme.example", "password": "x", field: value}

    response = send_json(APIClient(), "post", "/api/v1/auth/token/", body)

    unstorable_refused(response, field)


@pytest.mark.parametrize(
    "authorization", [f"Token {NUL}", f"Api-Key ab{NUL}.cd", f"Token {'a' * 20}{NUL}"]
)
def test_a_nul_in_the_authorization_header_is_a_400(authorization):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=authorization)

    unstorable_refused(client.get("/api/v1/balance/"), "headers")


def test_a_nul_in_a_session_cookie_is_a_400(world, client):
    client.cookies["sessionid"] = f"abcdefgh{NUL}"

    response = client.get("/usage/")

    assert response.status_code == 400


def test_a_genuine_token_still_works(world):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=world.admin).key}")

    assert client.get("/api/v1/balance/").status_code == 200


@pytest.mark.parametrize("value", [NUL, f"Web{NUL}site"])
def test_a_nul_in_the_admin_search_and_autocomplete_is_a_400(world, client, value):
    client.force_login(world.admin)
    for path in (
        "/admin/accounts/project/",
        "/admin/accounts/user/",
        "/admin/credits/creditevent/",
        "/admin/accounts/apikey/",
    ):
        response = client.get(path, {"q": value})
        assert response.status_code == 400, path
    response = client.get(
        "/admin/autocomplete/",
        {
            "term": value,
            "app_label": "accounts",
            "model_name": "project",
            "field_name": "subscription",
        },
    )
    unstorable_refused(response, "term")
    assert client.get("/admin/accounts/project/", {"q": "Web"}).status_code == 200


@pytest.mark.parametrize("name", ["product", "feature", "period", "from", "to", "environment"])
def test_a_nul_in_a_page_filter_is_a_400(world, client, name):
    client.force_login(world.admin)
    for path in ("/usage/", "/usage/environments/", "/admin/credit-usage/"):
        response = client.get(path, {name: NUL})
        assert response.status_code == 400, path
        assert b"NUL" in response.content


def test_a_nul_in_a_login_form_is_refused(world, client):
    form = {"username": f"alice{NUL}@acme.example", "password": "x"}
    response = client.post(
        "/login/", urlencode(form), content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400

    response = client.post("/login/", form)  # multipart: the form's own fields refuse it
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


# --- Dates the product cannot place in a billing period -------------------------------------------

UNPLACEABLE_TIMESTAMPS = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",  # before the year 1 in UTC
    "0002-01-01T05:00:00+14:00",  # 31 December of the year 1 in UTC
    "9999-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-12:00",  # after 9999 in UTC
]


@pytest.mark.parametrize("timestamp", UNPLACEABLE_TIMESTAMPS)
def test_a_timestamp_without_a_billing_period_is_a_400_naming_it(world, key_client, timestamp):
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12", "UTC"):
        world.subscription.timezone = zone
        world.subscription.save()

        response = send_json(key_client, "post", EVENTS, usage(world, timestamp=timestamp))

        error = refused(response)
        assert error["code"] == "validation_error"
        assert list(error["details"]) == ["timestamp"]
    assert not CreditEvent.objects.exists()


@pytest.mark.parametrize(
    "timestamp",
    [
        "0001-12-31T23:59:59-12:00",  # 2 January of the year 2 in UTC
        "0002-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "2026-10-31T00:00:00Z",
    ],
)
def test_an_old_event_keeps_its_period_closed_answer(world, key_client, timestamp):
    world.subscription.timezone = "Pacific/Kiritimati"
    world.subscription.save()

    response = send_json(key_client, "post", EVENTS, usage(world, timestamp=timestamp))

    assert refused(response, 422)["code"] == "period_closed"


def test_a_far_future_event_keeps_its_timestamp_in_future_answer(world, key_client):
    response = send_json(key_client, "post", EVENTS, usage(world, timestamp="9998-06-01T00:00:00Z"))

    assert refused(response, 422)["code"] == "timestamp_in_future"


def test_in_a_batch_each_bad_event_is_refused_alone_and_the_others_are_recorded(world, key_client):
    events = [
        usage(world, idempotency_key="good-1"),
        usage(world, idempotency_key="year-1", timestamp="0001-01-01T00:00:00Z"),
        usage(world, idempotency_key="year-9999", timestamp="9999-12-31T23:59:59Z"),
        usage(world, idempotency_key="nul", status=NUL),
        usage(world, idempotency_key="surrogate", status=SURROGATE),
        {**usage(world, idempotency_key="bad-name"), SURROGATE: 1},
        usage(world, idempotency_key="old", timestamp="2025-01-01T00:00:00Z"),
        usage(world, idempotency_key="good-2", credits="2"),
    ]

    response = send_json(key_client, "post", BATCH, {"events": events})

    assert response.status_code == 200, response.content[:300]
    body = response.json()
    results = body["results"]
    assert [result["status"] for result in results] == [201, 400, 400, 400, 400, 400, 422, 201]
    assert list(results[1]["error"]["details"]) == ["timestamp"]
    assert list(results[2]["error"]["details"]) == ["timestamp"]
    assert list(results[3]["error"]["details"]) == ["status"]
    assert list(results[4]["error"]["details"]) == ["status"]
    assert results[6]["error"]["code"] == "period_closed"
    assert (body["accepted"], body["refused"]) == (2, 6)
    assert sorted(CreditEvent.objects.values_list("idempotency_key", flat=True)) == [
        "good-1",
        "good-2",
    ]
    # Resending the same batch judges it the same way, event by event.
    again = send_json(key_client, "post", BATCH, {"events": events}).json()
    assert [result["status"] for result in again["results"]] == [
        200,
        400,
        400,
        400,
        400,
        400,
        422,
        200,
    ]


def test_unstorable_text_in_the_batch_envelope_refuses_the_batch(world, key_client):
    response = send_json(key_client, "post", BATCH, {"events": [usage(world)], SURROGATE: "x"})

    unstorable_refused(response, "non_field_errors")
    assert not CreditEvent.objects.exists()


@pytest.mark.parametrize(
    "params",
    [
        {"period": "0000-01"},
        {"period": "0001-01"},
        {"period": "0001-12"},
        {"period": "9999-12"},
        {"start": "0001-01-01", "end": "0001-01-31"},
        {"start": "9999-12-01", "end": "9999-12-31"},
        {"start": "2026-01-01", "end": "9999-12-31"},
    ],
)
def test_a_report_period_without_a_billing_period_is_a_400_naming_it(world, admin_api, params):
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12"):
        world.subscription.timezone = zone
        world.subscription.save()
        for fmt in ("json", "csv"):
            response = admin_api.get("/api/v1/reports/usage-by-user/", {**params, "format": fmt})
            error = refused(response)
            assert error["code"] == "invalid_timeframe"
            assert error["details"]["parameter"] in params


def test_the_earliest_placeable_period_is_answered(world, admin_api):
    world.subscription.timezone = "Pacific/Kiritimati"
    world.subscription.save()

    response = admin_api.get("/api/v1/reports/usage-by-user/", {"period": "0002-01"})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"period": "0001-01"},
        {"period": "0000-01"},
        {"period": "0002-01"},
        {"period": "9999-12"},
        {"from": "0001-01-01", "to": "0001-01-02"},
        {"from": "9999-12-30", "to": "9999-12-31"},
    ],
)
def test_pages_explain_a_period_they_cannot_place(world, client, params):
    world.subscription.timezone = "Pacific/Kiritimati"
    world.subscription.save()
    client.force_login(world.admin)
    for path in ("/usage/", "/admin/credit-usage/"):
        response = client.get(path, params)
        assert response.status_code == 200, (path, params)
    client.force_login(world.manager)
    assert client.get("/usage/environments/", params).status_code == 200


# --- Errors in JSON under /api/ -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/limits/teams/-1/",
        "/api/v1/limits/users/abc/",
        "/api/v1/no-such-thing/",
        "/api/v2/events/",
        "/api/",
    ],
)
def test_a_url_under_api_that_matches_nothing_is_a_json_404(world, admin_api, path):
    assert refused(admin_api.get(path), 404)["code"] == "not_found"
    assert refused(APIClient().post(path), 404)["code"] == "not_found"


def test_pages_keep_their_html_404(world, client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "params",
    [
        {"format": "csv"},
        {"format": "csv", "scope": "nowhere"},
        {"format": "csv", "scope": "environment", "environment": "not-a-uuid"},
        {"format": "csv", "scope": "mine", "bogus": "1"},
    ],
)
def test_an_export_error_is_json_when_csv_was_asked_for(world, admin_api, params):
    for accept in ({}, {"HTTP_ACCEPT": "text/csv"}):
        refused(admin_api.get("/api/v1/exports/credit-usage/", params, **accept))


# --- Unknown fields on every write ----------------------------------------------------------------


def test_every_write_refuses_unknown_fields(world, key_client, admin_api):
    team = factories.TeamFactory(subscription=world.subscription)
    schedule = send_json(
        admin_api,
        "post",
        "/api/v1/report-schedules/",
        {"name": "Weekly", "recipients": ["finance@acme.example"]},
    ).json()
    writes = [
        (key_client, "post", EVENTS, usage(world, bogus=1)),
        (key_client, "post", BATCH, {"events": [usage(world)], "bogus": 1}),
        (
            APIClient(),
            "post",
            "/api/v1/auth/token/",
            {"email": "a@b.example", "password": "x", "bogus": 1},
        ),
        (admin_api, "post", "/api/v1/api-keys/", {"name": "CI", "bogus": 1}),
        (admin_api, "patch", "/api/v1/subscription/", {"limit_mode": "soft", "bogus": 1}),
        (
            admin_api,
            "put",
            f"/api/v1/limits/users/{world.member.pk}/",
            {"credits": "5", "bogus": 1},
        ),
        (admin_api, "put", f"/api/v1/limits/teams/{team.pk}/", {"credits": "5", "bogus": 1}),
        (
            admin_api,
            "post",
            "/api/v1/report-schedules/",
            {"name": "W", "recipients": ["a@b.example"], "bogus": 1},
        ),
        (
            admin_api,
            "put",
            f"/api/v1/report-schedules/{schedule['id']}/",
            {"name": "W", "recipients": ["a@b.example"], "bogus": 1},
        ),
        (admin_api, "patch", f"/api/v1/report-schedules/{schedule['id']}/", {"bogus": 1}),
    ]
    for client, method, url, body in writes:
        error = refused(send_json(client, method, url, body))
        assert error["details"] == {"bogus": ["Unknown field."]}, (method, url, error)
    assert not CreditEvent.objects.exists()


def test_a_field_that_cannot_be_written_says_so(admin_api):
    response = send_json(admin_api, "patch", "/api/v1/subscription/", {"base_allocation": "1"})

    assert refused(response)["details"] == {
        "base_allocation": ["This field cannot be changed over the API."]
    }


@pytest.mark.parametrize("fmt", ["json", "multipart"])
def test_an_empty_environment_id_is_refused_in_json_and_forms(world, admin_api, fmt):
    created = send_json(
        admin_api,
        "post",
        "/api/v1/report-schedules/",
        {"name": "Weekly", "recipients": ["finance@acme.example"]},
    ).json()
    body = {"name": "Weekly", "recipients": ["finance@acme.example"], "environment": ""}

    response = admin_api.put(f"/api/v1/report-schedules/{created['id']}/", body, format=fmt)
    assert refused(response)["details"] == {"environment": ["Must be a valid UUID."]}

    response = admin_api.post("/api/v1/api-keys/", {"name": "CI", "environment": ""}, format=fmt)
    assert refused(response)["details"] == {"environment": ["Must be a valid UUID."]}


@pytest.mark.parametrize("value", ["0", "-1"])
def test_subscription_ids_from_1_or_a_400(admin_api, value):
    for path in ("/api/v1/balance/", "/api/v1/api-keys/", "/api/v1/reports/usage-by-user/"):
        response = admin_api.get(path, {"subscription": value, "timeframe": "this_month"})
        assert refused(response)["code"] == "validation_error", path


def test_the_schema_states_these_rules(client):
    schema = client.get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    requests = [name for name in components if name.endswith("Request")]
    assert {"TokenRequest", "UsageInputRequest", "CreditLimitRequest"} <= set(requests)
    for name in requests:
        assert components[name]["additionalProperties"] is False, name
    credits = components["CreditLimitRequest"]["properties"]["credits"]["oneOf"]
    assert {"type": "string", "pattern": "^[0-9]{1,14}(\\.[0-9]{1,4})?$"}.items() <= credits[
        0
    ].items()
    assert components["TokenRequest"]["properties"]["email"]["minLength"] == 1
    balance = {
        parameter["name"]: parameter["schema"]
        for parameter in schema["paths"]["/api/v1/balance/"]["get"]["parameters"]
    }
    assert balance["environment"] == {"type": "string", "format": "uuid"}
    assert balance["subscription"] == {"type": "integer", "minimum": 1}
    assert balance["user"]["pattern"] == "^[^\\u0000]*$"


def test_an_empty_environment_id_on_the_balance_is_a_400(admin_api):
    response = admin_api.get("/api/v1/balance/", {"environment": ""})

    assert refused(response)["details"] == {"environment": ["Give an EnvironmentId (a UUID)."]}


def test_a_crash_under_api_is_answered_in_json_and_pages_keep_html(rf):
    from core.api_errors import server_error

    api = server_error(rf.get("/api/v1/balance/"))
    page = server_error(rf.get("/usage/"))

    assert api.status_code == page.status_code == 500
    assert json.loads(api.content)["error"]["code"] == "server_error"
    assert page["Content-Type"].startswith("text/html")
