"""Malformed and hostile input gets a 4xx in the one error shape, never a 5xx, and is stored and
shown harmlessly.

* Schemathesis generates requests from the OpenAPI schema (``/api/schema/``), valid and
  invalid, for every operation, with an API key and with a subscription admin's token: no
  response is a 5xx, and every response's status, content type and body match the schema.
* Explicit cases: huge payloads and batches, deeply nested JSON, wrong types, non-numeric,
  negative and over-precise credits, unknown and other tenants' ids (answered exactly like
  unknown ones), invalid time zones and timeframes, SQL and HTML meta-characters in names
  (stored as typed, shown escaped in the admin and the pages), and CSV formula injection in
  every text column of every CSV.
"""

import csv
import io
import json
from decimal import Decimal, InvalidOperation

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import Role
from tests import factories

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events/"
BATCH = "/api/v1/events/batch/"


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


@pytest.fixture
def secret(world, product):
    return factories.api_key(world.subscription)[1]


@pytest.fixture
def key_client(secret):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return client


@pytest.fixture
def admin_token(world):
    return Token.objects.create(user=world.admin).key


def usage(world, **overrides) -> dict:
    return {
        "idempotency_key": "op-1",
        "environment": str(world.environment.public_id),
        "user": world.member.email,
        "product": "ai-agent",
        "credits": "1.5",
        **overrides,
    }


def error_code(response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]["code"]


# --- Schemathesis ---------------------------------------------------------------------------------

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Examples per operation: the fitting credential in both modes, the other one (which must be
# refused as documented) briefly. Few: the stock run (tests/reports/test_schema.py) fuzzes every
# operation with every check too; this one adds the in-process view of the same requests.
EXAMPLES = {GenerationMode.POSITIVE: 3, GenerationMode.NEGATIVE: 2}
EXAMPLES_OTHER_CREDENTIAL = 1
MACHINE_OPERATIONS = ("/api/v1/events/", "/api/v1/events/batch/")


@pytest.fixture
def wsgi_app():
    """Django's WSGI handler, in the test's transaction: as the test client does, requests do
    not close the connection when they finish."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def fuzz(operation, mode: GenerationMode, examples: int, headers: dict) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run: no flaky CI
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def call(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    call()


def test_every_operation_answers_generated_requests_as_its_schema_says(
    world, secret, admin_token, wsgi_app
):
    """Valid and invalid requests for every operation, with an API key and a personal token."""
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    credentials = {
        "API key": {"Authorization": f"Api-Key {secret}"},
        "admin token": {"Authorization": f"Token {admin_token}"},
    }
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures = []
    for operation in operations:
        fitting = "API key" if operation.path in MACHINE_OPERATIONS else "admin token"
        other = "admin token" if fitting == "API key" else "API key"
        runs = [(mode, examples, fitting) for mode, examples in EXAMPLES.items()]
        runs.append((GenerationMode.POSITIVE, EXAMPLES_OTHER_CREDENTIAL, other))
        for mode, examples, who in runs:
            cache.clear()  # the token endpoint's throttle
            try:
                fuzz(operation, mode, examples, credentials[who])
            except Unsatisfiable:  # no invalid request exists (a free-form path segment)
                continue
            except (Exception, BaseExceptionGroup) as failure:  # list them all
                failures.append(f"{operation.label} ({mode.value}, {who}):\n{failure}")
    assert not failures, "\n\n".join(failures)


# --- Huge and deeply nested bodies ----------------------------------------------------------------


def test_a_body_beyond_the_upload_limit_is_a_413(world, key_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps(usage(world, feature="x" * 20_000))

    response = key_client.post(EVENTS, body, content_type="application/json")

    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"


def test_a_batch_of_a_thousand_is_answered_event_by_event_and_more_is_refused(world, key_client):
    broken = {"idempotency_key": "k"}  # fails validation without touching the database
    response = key_client.post(BATCH, {"events": [broken] * 1000}, format="json")
    assert response.status_code == 200
    assert response.json()["refused"] == 1000

    response = key_client.post(BATCH, {"events": [broken] * 1001}, format="json")
    assert response.status_code == 400
    assert error_code(response) == "validation_error"


@pytest.mark.parametrize("depth", [50, 100_000])
def test_deeply_nested_json_is_a_400(world, key_client, depth):
    nested = "[" * depth + "]" * depth
    for url, body in [
        (EVENTS, nested),
        (EVENTS, '{"credits": ' + nested + "}"),
    ]:
        response = key_client.post(url, body, content_type="application/json")
        assert response.status_code == 400, (url, depth)
        assert error_code(response) in ("parse_error", "validation_error")
    # In a batch, each event is judged alone: a nested list is one refused event.
    response = key_client.post(BATCH, '{"events": ' + nested + "}", content_type="application/json")
    if response.status_code == 200:
        assert response.json()["results"][0]["status"] == 400
    else:
        assert response.status_code == 400 and error_code(response) == "parse_error"


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\xff\xfe",  # not UTF-8
        b'{"credits": 1',  # truncated
        b"[]",  # not an object
        b'"just a string"',
        b"null",
        b'{"credits": "1", "credits": "2"}',  # duplicate keys
    ],
)
def test_malformed_json_is_a_400(key_client, body):
    response = key_client.post(EVENTS, body, content_type="application/json")

    assert response.status_code == 400
    assert error_code(response) in ("parse_error", "validation_error")


# --- Wrong types and bad credits ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("credits", "abc"),
        ("credits", "-1"),
        (" credits", "1"),  # an unknown field
        ("credits", -0.0001),
        ("credits", "1.00001"),  # five decimal places
        ("credits", "0.00001"),
        ("credits", "NaN"),
        ("credits", "Infinity"),
        ("credits", "-Infinity"),
        ("credits", "1e400"),
        ("credits", "1" * 20),  # beyond 18 digits
        ("credits", "0x10"),
        ("credits", True),
        ("credits", None),
        ("credits", ["1"]),
        ("credits", {"amount": "1"}),
        ("idempotency_key", "k" * 201),
        ("idempotency_key", ""),
        ("environment", "not-a-uuid"),
        ("environment", 7.5),
        ("timestamp", "yesterday"),
        ("timestamp", "2026-11-23T10:00:00"),  # no offset: ambiguous
        ("timestamp", "2026-02-30T10:00:00Z"),
        ("input_tokens", -1),
        ("input_tokens", 2**63),
        ("latency_ms", "fast"),
        ("status", "exploded"),
        ("product", "<script>"),
        ("user", "not an email"),
        ("agent", ["a"]),
    ],
)
def test_wrong_types_and_bad_values_are_a_400_and_store_nothing(world, key_client, field, value):
    from credits.models import CreditEvent, IdempotencyRecord

    response = key_client.post(EVENTS, usage(world, **{field: value}), format="json")

    assert response.status_code == 400, response.json()
    assert error_code(response) == "validation_error"
    assert not CreditEvent.objects.exists()
    assert not IdempotencyRecord.objects.exists()


def test_a_json_number_with_too_many_decimals_is_refused_not_rounded(world, key_client):
    body = json.dumps(usage(world)).replace('"1.5"', "1.00001")

    response = key_client.post(EVENTS, body, content_type="application/json")

    assert response.status_code == 400
    assert "credits" in response.json()["error"]["details"]


def test_four_decimal_places_are_kept_exactly(world, key_client):
    body = json.dumps(usage(world)).replace('"1.5"', "0.1234")

    response = key_client.post(EVENTS, body, content_type="application/json")

    assert response.status_code == 201
    assert response.json()["event"]["credits"] == "0.1234"


# --- Unknown ids and other tenants' ids -----------------------------------------------------------


def without_echo(response, *echoed) -> dict:
    """The response body with the ids the caller sent blanked out."""
    text = response.content.decode()
    for value in echoed:
        text = text.replace(str(value), "<sent>")
    return {"status": response.status_code, "body": json.loads(text)}


def test_another_tenants_ids_get_exactly_the_answer_unknown_ids_get(world, key_client, product):
    """Nothing tells an id that exists elsewhere from one that exists nowhere."""
    import uuid

    from credits.models import Agent

    foreign_agent = Agent.objects.create(subscription=world.other_subscription, name="theirs")
    nowhere = uuid.uuid4()
    cases = [
        ("environment", str(world.foreign_environment.public_id), str(nowhere)),
        ("user", world.outsider.email, "nobody@nowhere.example"),
        ("agent", str(foreign_agent.pk), "987654321"),
    ]
    for field, theirs, unknown in cases:
        a = key_client.post(EVENTS, usage(world, **{field: theirs}), format="json")
        b = key_client.post(EVENTS, usage(world, **{field: unknown}), format="json")
        assert a.status_code in (404, 422), (field, a.json())
        assert without_echo(a, theirs) == without_echo(b, unknown), field

    admin = APIClient()
    admin.force_authenticate(world.admin)
    for path in ("/api/v1/limits/users/{}/", "/api/v1/limits/teams/{}/"):
        theirs = (
            world.outsider.pk
            if "users" in path
            else factories.TeamFactory(subscription=world.other_subscription).pk
        )
        a = admin.get(path.format(theirs))
        b = admin.get(path.format(987654321))
        assert without_echo(a, theirs) == without_echo(b, 987654321)
    for query in ({"subscription": world.other_subscription.pk}, {"subscription": 987654321}):
        response = admin.get("/api/v1/balance/", query)
        assert response.status_code == 404
        assert error_code(response) == "not_found"


@pytest.mark.parametrize("value", ["99999999999999999999", "-1", "0", "1.5", "1e3", "abc", ""])
def test_out_of_range_and_malformed_ids_are_4xx(world, value):
    admin = APIClient()
    admin.force_authenticate(world.admin)
    for path, params in [
        ("/api/v1/balance/", {"subscription": value}),
        ("/api/v1/limits/", {"subscription": value}),
        ("/api/v1/api-keys/", {"subscription": value}),
        ("/api/v1/subscription/", {"subscription": value}),
        ("/api/v1/reports/usage-by-user/", {"subscription": value, "timeframe": "this_month"}),
        ("/api/v1/reports/usage-by-team/", {"team": value, "timeframe": "this_month"}),
        ("/api/v1/exports/credit-usage/", {"scope": "mine", "subscription": value}),
    ]:
        response = admin.get(path, params)
        assert 200 <= response.status_code < 500, (path, value, response.status_code)
    for path in [f"/api/v1/limits/users/{value}/", f"/api/v1/limits/teams/{value}/"]:
        assert admin.get(path).status_code in (200, 404), path


def test_huge_ids_in_urls_are_404s(world, client):
    client.force_login(world.admin)
    huge = "9" * 30
    for path in [
        f"/api/v1/limits/users/{huge}/",
        f"/api/v1/limits/teams/{huge}/",
        f"/admin/credit-usage/members/{huge}/",
        f"/usage/environments/members/{huge}/",
        f"/admin/accounts/project/{huge}/change/",
    ]:
        response = client.get(path)
        assert response.status_code in (302, 404), (path, response.status_code)


# --- Time zones and timeframes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"timeframe": "last_13_weeks"},
        {"timeframe": "<script>alert(1)</script>"},
        {"period": "2026-13"},
        {"period": "99999-01"},
        {"start": "2026-02-30", "end": "2026-03-01"},
        {"start": "2026-03-01", "end": "2026-02-01"},  # ends before it starts
        {"start": "2020-01-01", "end": "2026-01-01"},  # more than 366 days
        {"start": "2026-03-01"},  # no end
        {"timeframe": "this_month", "period": "2026-11"},  # two at once
        {},
    ],
)
def test_invalid_timeframes_are_a_400_in_the_error_shape(world, params):
    admin = APIClient()
    admin.force_authenticate(world.admin)
    for fmt in ("json", "csv"):
        response = admin.get("/api/v1/reports/usage-by-user/", {**params, "format": fmt})
        assert response.status_code == 400, (params, response.status_code)
        assert response["Content-Type"].startswith("application/json")
        assert error_code(response) in (
            "invalid_timeframe",
            "validation_error",
        ), response.json()
        assert "<script>" not in response.json()["error"]["message"] or "timeframe" in params


@pytest.mark.parametrize(
    "query",
    [
        {"period": "<script>alert(1)</script>"},
        {"from": "<script>alert(1)</script>", "to": "2026-02-30"},
        {"from": "2026-12-01", "to": "2026-01-01"},
        {"period": "0000-00"},
        {"period": "9999-12"},
    ],
)
def test_pages_show_bad_dates_as_a_notice_escaped(world, client, query):
    for user, path in [(world.member, "/usage/"), (world.manager, "/usage/environments/")]:
        client.force_login(user)
        response = client.get(path, query)
        assert response.status_code == 200, (path, query)
        assert b"<script>alert(1)</script>" not in response.content
    client.force_login(world.admin)
    response = client.get("/admin/credit-usage/", query)
    assert response.status_code == 200
    assert b"<script>alert(1)</script>" not in response.content


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "UTC; DROP TABLE x", "../../etc/passwd"])
def test_an_invalid_time_zone_is_refused(world, zone):
    from django.core.exceptions import ValidationError

    subscription = world.subscription
    subscription.timezone = zone
    with pytest.raises(ValidationError) as refused:
        subscription.full_clean()
    assert "timezone" in refused.value.message_dict

    admin = APIClient()
    admin.force_authenticate(world.admin)
    response = admin.patch("/api/v1/subscription/", {"timezone": zone}, format="json")
    assert response.status_code == 400
    assert error_code(response) == "validation_error"


def test_staff_cannot_save_an_invalid_time_zone_in_the_admin(world, client):
    from accounts.models import Subscription, User

    client.force_login(User.objects.create_superuser("root@platform.example", "x"))
    url = f"/admin/accounts/subscription/{world.subscription.pk}/change/"
    response = client.post(
        url,
        {
            "name": "Acme",
            "plan": "pro",
            "timezone": "Mars/Olympus",
            "base_allocation": "10",
            "limit_mode": "hard",
            "excess_allowance": "0",
        },
    )
    assert response.status_code == 200  # the form again, with the error
    assert Subscription.objects.get(pk=world.subscription.pk).timezone == "Europe/Prague"


# --- SQL and HTML meta-characters in names --------------------------------------------------------

HOSTILE_NAMES = [
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
    "Robert'); DROP TABLE accounts_project;--",
    "' OR '1'='1",
    "{{ request.user.password }}",
    "%(secret)s ${jndi:ldap://x}",
]


@pytest.fixture
def hostile_names(world, product, key_client):
    """Every name people or API callers choose, holding HTML, SQL and template syntax."""
    from accounts.models import Project, Team

    for number, name in enumerate(HOSTILE_NAMES):
        project = Project.objects.create(subscription=world.subscription, name=f"P{number} {name}")
        environment = factories.EnvironmentFactory(project=project, name=f"E{number} {name}")
        factories.membership(world.member, Role.MEMBER, environment=environment)
        factories.membership(world.manager, Role.PROJECT_MANAGER, environment=environment)
        team = Team.objects.create(subscription=world.subscription, name=f"T{number} {name}")
        if number == 0:
            factories.team_membership(world.member, team)
        response = key_client.post(
            EVENTS,
            usage(
                world,
                idempotency_key=f"hostile-{number}",
                environment=str(environment.public_id),
                agent=f"A{number} {name}"[:200],
                agent_type=name[:50],
                model=name[:100],
                feature=name[:100],
                session_id=name,
            ),
            format="json",
        )
        assert response.status_code == 201, response.json()
    world.member.display_name = HOSTILE_NAMES[1]
    world.member.save()
    return world


def test_hostile_names_are_stored_exactly_as_typed(hostile_names):
    from accounts.models import Environment, Project
    from credits.models import Agent, CreditEvent

    for number, name in enumerate(HOSTILE_NAMES):
        assert Project.objects.filter(name=f"P{number} {name}").exists()
        assert Environment.objects.filter(name=f"E{number} {name}").exists()
        assert Agent.objects.filter(name=f"A{number} {name}"[:200]).exists()
        assert CreditEvent.objects.filter(feature=name[:100], session_id=name).exists()
    assert Project.objects.count() >= len(HOSTILE_NAMES)  # no table was dropped


def test_hostile_names_are_rendered_escaped_in_the_admin_and_the_pages(hostile_names, client):
    from accounts.models import Project
    from credits.models import CreditEvent

    world = hostile_names
    project = Project.objects.get(name__startswith="P0 ")
    event = CreditEvent.objects.filter(feature=HOSTILE_NAMES[0]).get()
    pages = {
        world.admin: [
            "/admin/accounts/project/",
            f"/admin/accounts/project/{project.pk}/change/",
            "/admin/accounts/environment/",
            "/admin/accounts/team/",
            "/admin/accounts/user/",
            "/admin/credits/agent/",
            "/admin/credits/creditevent/",
            f"/admin/credits/creditevent/{event.pk}/change/",
            "/admin/credit-usage/",
            f"/admin/credit-usage/members/{world.member.pk}/",
            "/admin/accounts/auditevent/",
        ],
        world.manager: ["/usage/environments/", f"/usage/environments/members/{world.member.pk}/"],
        world.member: ["/usage/"],
    }
    raw = [name.encode() for name in HOSTILE_NAMES[:2]]
    for user, paths in pages.items():
        client.force_login(user)
        for path in paths:
            response = client.get(path)
            assert response.status_code == 200, path
            for name in raw:
                assert name not in response.content, f"{path} renders {name!r} unescaped"
            assert response["X-Content-Type-Options"] == "nosniff"
    client.force_login(world.admin)
    listing = client.get("/admin/accounts/project/").content.decode()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in listing


def test_json_carries_hostile_names_as_data_never_as_html(hostile_names):
    admin = APIClient()
    admin.force_authenticate(hostile_names.admin)

    response = admin.get(
        "/api/v1/reports/usage-by-feature/", {"timeframe": "this_month", "format": "json"}
    )

    assert response["Content-Type"] == "application/json"
    assert response["X-Content-Type-Options"] == "nosniff"
    features = {row["feature"] for row in response.json()["results"]}
    assert set(HOSTILE_NAMES) <= features


# --- CSV formula injection in every text column of every CSV --------------------------------------

FORMULAS = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\t=x", "\r=y"]


def is_number(cell: str) -> bool:
    try:
        Decimal(cell)
    except InvalidOperation:
        return False
    return True


@pytest.fixture
def formulas(world, product):
    """Every text a CSV can carry, chosen by people and API callers, starts with a formula."""
    from accounts.models import Subscription, Team

    project = world.environment.project
    project.name = FORMULAS[0]
    project.save()
    world.environment.name = FORMULAS[1]
    world.environment.save()
    factories.team_membership(
        world.admin, Team.objects.create(subscription=world.subscription, name=FORMULAS[2])
    )
    Subscription.objects.create(name=FORMULAS[3], parent=world.subscription)
    product.name = FORMULAS[4]
    product.save()
    sneaky = factories.UserFactory(email="=1+2@evil.example")
    factories.membership(sneaky, Role.MEMBER, environment=world.environment)
    _, secret = factories.api_key(world.subscription, name="@SUM(1+1)")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    for number, (user, name) in enumerate(
        [(world.admin.email, FORMULAS[5]), (sneaky.email, FORMULAS[0]), (None, FORMULAS[1])]
    ):
        payload = usage(
            world,
            idempotency_key=f"formula-{number}",
            user=user,
            agent=name,
            agent_type=name,
            model=name,
            feature=name,
        )
        response = client.post(EVENTS, {k: v for k, v in payload.items() if v}, format="json")
        assert response.status_code == 201, response.json()
    return world


def csv_rows(response) -> list[dict]:
    assert response.status_code == 200, response
    body = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.DictReader(io.StringIO(body, newline="")))


def every_csv(admin) -> dict[str, list[dict]]:
    from reports.catalogue import REPORTS

    files = {
        f"report {report.slug}": csv_rows(
            admin.get(
                f"/api/v1/reports/{report.slug}/",
                {"timeframe": "this_month", "format": "csv", "include_sub_accounts": "true"}
                if report.sub_account_toggle
                else {"timeframe": "this_month", "format": "csv"},
            )
        )
        for report in REPORTS
    }
    for scope in ("mine", "subscription"):
        files[f"export {scope}"] = csv_rows(
            admin.get("/api/v1/exports/credit-usage/", {"scope": scope, "format": "csv"})
        )
    return files


def test_no_csv_cell_starts_a_formula(formulas):
    """Every cell of every CSV: text that a spreadsheet would run starts with a quote; only a
    number (a negative adjustment) may start with a minus sign."""
    factories.adjustment(formulas, "-0.5", "=HYPERLINK()", environment=formulas.environment)
    admin = APIClient()
    admin.force_authenticate(formulas.admin)
    files = every_csv(admin)
    seen = set()
    for name, rows in files.items():
        assert rows, f"{name} is empty: nothing was checked"
        for row in rows:
            for column, cell in row.items():
                seen.add(cell)
                if cell and cell[0] in "=+-@\t\r":
                    assert is_number(cell), f"{name}, column {column}: {cell!r} runs as a formula"
    for formula in FORMULAS:  # the hostile values really are in the files, neutralised
        # (the API trims leading tabs and carriage returns from what callers send)
        assert any(cell.startswith(("'" + formula, "'" + formula.strip())) for cell in seen)
