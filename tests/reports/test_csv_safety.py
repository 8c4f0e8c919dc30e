"""CSV files are safe to open in a spreadsheet, valid RFC 4180, UTF-8, and streamed.

Every text column that people or API callers fill is neutralised when it starts with = + - @,
a tab or a carriage return; numbers (negative adjustments included) stay numbers; JSON is
never altered.
"""

import csv
import dataclasses
import io

import pytest
from django.http import StreamingHttpResponse

from reports import selectors
from reports.exports import CREDIT_USAGE_COLUMNS, neutralise
from tests import factories
from tests.factories import frozen_at, utc
from tests.reports.recorder import EventRecorder, logged_in

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 23, 10)
KEY = '=HYPERLINK("http://evil.example","Click")'
PROJECT = "+cmd|' /C calc'!A0"
AGENT, AGENT_TYPE, MODEL = "@SUM(1+1)", "=type", "-2+3"
FEATURE, PRODUCT, TEAM, SUB_ACCOUNT = "+feature", "-product", "\t=team", "\r=sub"
REPORTS = "/api/v1/reports/"
EXPORT = "/api/v1/exports/credit-usage/"


frozen_now = frozen_at(NOW)


@pytest.fixture
def hostile(world):
    """Names chosen by people and API callers, each one a formula."""
    project = world.environment.project
    project.name = PROJECT
    project.save()
    factories.team_membership(
        world.member, factories.TeamFactory(subscription=world.subscription, name=TEAM)
    )
    factories.SubscriptionFactory(name=SUB_ACCOUNT, parent=world.subscription)
    product = factories.ProductFactory(slug="hostile", name=PRODUCT)
    product.enabled_for.add(world.subscription)
    recorder = EventRecorder(world, key_name=KEY)
    recorder.record(
        at=utc(2026, 11, 20, 9),
        user=None,
        product="hostile",
        feature=FEATURE,
        agent=AGENT,
        agent_type=AGENT_TYPE,
        model=MODEL,
    )
    recorder.record(at=utc(2026, 11, 21, 9), feature=FEATURE, agent=AGENT, model=MODEL)
    return recorder


def csv_dicts(response) -> list[dict]:
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(body, newline="")))


def report_csv(user, report, **params) -> list[dict]:
    response = logged_in(user).get(
        f"{REPORTS}{report}/", {"timeframe": "this_month", "format": "csv", **params}
    )
    return csv_dicts(response)


@pytest.mark.parametrize(
    ("report", "column", "value"),
    [
        ("usage-by-user", "user_email", KEY),
        ("usage-by-agent", "agent_name", AGENT),
        ("usage-by-agent", "agent_type", AGENT_TYPE),
        ("usage-by-agent", "model_used", MODEL),
        ("usage-by-model", "model", MODEL),
        ("usage-by-product", "product", PRODUCT),
        ("usage-by-feature", "feature", FEATURE),
        ("usage-by-team", "team", TEAM),
        ("usage-by-environment", "environment", f"{PROJECT} / Production"),
        ("usage-by-sub-account", "sub_account", SUB_ACCOUNT),
    ],
)
def test_formulas_in_report_text_columns_are_neutralised(world, hostile, report, column, value):
    cells = [row[column] for row in report_csv(world.admin, report)]
    as_json = logged_in(world.admin).get(f"{REPORTS}{report}/", {"timeframe": "this_month"})

    assert f"'{value}" in cells
    assert value not in cells
    assert value in [row[column] for row in as_json.json()["results"]]


def test_formulas_in_the_export_are_neutralised(world, hostile):
    rows = csv_dicts(
        logged_in(world.admin).get(
            "/api/v1/exports/credit-usage/", {"scope": "subscription", "format": "csv"}
        )
    )

    assert rows[0]["User"] == f"'{KEY}"
    assert rows[0]["Environment"] == f"'{PROJECT} / Production"


def test_negative_credits_stay_numbers(world, hostile):
    factories.adjustment(world, "-2", "Correction")

    products = report_csv(world.admin, "usage-by-product", ordering="credits_consumed")
    export = csv_dicts(
        logged_in(world.admin).get(
            "/api/v1/exports/credit-usage/", {"scope": "subscription", "format": "csv"}
        )
    )

    assert products[0] == {
        "product": "No product",
        "credits_consumed": "-2.0000",
        "avg_credits_per_day": "-0.0870",
        "excess_credits": "0.0000",
        "share_percent": "-200.00",  # of the 1 credit left after the adjustment
        "base_credits": "-2.0000",
        "grant_credits": "0.0000",
        "cost": "",  # no price
        "currency": "",
    }
    assert export[-1]["Credits"] == "-2.0000"


@pytest.mark.parametrize("trigger", ["=", "+", "-", "@", "\t", "\r"])
def test_every_formula_trigger_is_neutralised(trigger):
    assert neutralise(f"{trigger}1+1") == f"'{trigger}1+1"


@pytest.mark.parametrize("value", ["", "alice@acme.example", "Website / Production", " =1", "'=1"])
def test_other_text_is_left_alone(value):
    assert neutralise(value) == value


def test_quotes_commas_line_breaks_and_unicode_survive_the_round_trip(world):
    name = 'Zürich 東京, "blue"\nline'
    project = world.environment.project
    project.name = name
    project.save()
    EventRecorder(world).record(at=utc(2026, 11, 20, 9))

    response = logged_in(world.admin).get(
        "/api/v1/exports/credit-usage/", {"scope": "subscription", "format": "csv"}
    )
    body = b"".join(response.streaming_content)

    assert '"Zürich 東京, ""blue""\nline / Production"'.encode() in body
    assert csv_dicts_from(body)[0]["Environment"] == f"{name} / Production"


def csv_dicts_from(body: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))


@pytest.mark.parametrize(
    ("project", "environment", "key"),
    [
        (PROJECT, "Production", KEY),
        ('Zürich 東京, "blue"\nline\r', " spaced ", "\\."),
        ("\t=tab", "-minus", "@at,comma"),
        ("Website", "\r=sub", '"quoted"'),
    ],
)
def test_the_export_is_byte_for_byte_what_the_csv_module_writes(world, project, environment, key):
    """PostgreSQL writes the file (COPY); the JSON rows are formatted in Python. Written by the
    ``csv`` module and neutralised, the JSON rows give the same bytes, whatever the names; the
    costs too, rounded half to even in both (a cent per credit: 1.5 credits cost 0.015, 0.02)."""
    factories.plan_price(
        world.subscription.plan,
        credit_price="0.01",
        excess_price="0.02",
        effective_from=utc(2026, 1, 1),
    )
    world.environment.project.name = project
    world.environment.project.save()
    world.environment.name = environment
    world.environment.save()
    recorder = EventRecorder(world, key_name=key)
    recorder.record(at=utc(2026, 11, 20, 9))
    recorder.record(at=utc(2026, 11, 20, 9, 30, 5, 120000), user=None, credits="987.6543")
    recorder.record(at=utc(2026, 11, 20, 9, 30, 5, 1), credits="0")
    factories.adjustment(world, "-2.5", "Correction")
    client = logged_in(world.admin)
    params = {"scope": "subscription"}

    body = b"".join(client.get(EXPORT, {**params, "format": "csv"}).streaming_content)
    rows = client.get(EXPORT, {**params, "page_size": 1000}).json()["results"]

    written = io.StringIO(newline="")
    writer = csv.writer(written)
    writer.writerow(CREDIT_USAGE_COLUMNS)
    for row in rows:
        row["User"], row["Environment"] = neutralise(row["User"]), neutralise(row["Environment"])
        writer.writerow(row.values())
    assert len(rows) == 4
    assert [row["Timestamp"] for row in rows[1:3]] == [
        "2026-11-20T09:30:05.000001Z",
        "2026-11-20T09:30:05.120000Z",
    ]
    assert body == ("\ufeff" + written.getvalue()).encode()  # after the byte-order mark
    assert [row["Cost"] for row in rows[:3]] == ["0.02", "0.00", "9.88"]


@pytest.mark.parametrize(
    ("report", "row_class"),
    [
        ("usage-by-user", selectors.UserUsage),
        ("usage-by-agent", selectors.AgentUsage),
        ("usage-by-model", selectors.ModelUsage),
        ("usage-by-product", selectors.ProductUsage),
        ("usage-by-feature", selectors.FeatureUsage),
        ("usage-by-team", selectors.TeamUsage),
        ("usage-by-environment", selectors.EnvironmentUsage),
    ],
)
def test_an_empty_report_is_a_streamed_header_row(world, report, row_class):
    response = logged_in(world.member).get(
        f"{REPORTS}{report}/", {"timeframe": "last_week", "format": "csv"}
    )

    assert isinstance(response, StreamingHttpResponse)
    header = ",".join(spec.name for spec in dataclasses.fields(row_class))
    assert b"".join(response.streaming_content) == f"\ufeff{header}\r\n".encode()


def test_every_csv_starts_with_the_utf8_byte_order_mark(world):
    """Spreadsheets that guess the encoding (Excel's default) read the file as UTF-8 only when it
    starts with the byte-order mark: every report and export does, before its header row, and
    the same bytes go into emails and large exports (tests/reports/test_schedule_email.py,
    test_large_exports.py compare them)."""
    from reports.catalogue import REPORTS as CATALOGUE

    world.environment.project.name = "Zürich 東京"
    world.environment.project.save()
    EventRecorder(world).record(at=utc(2026, 11, 20, 9))
    client = logged_in(world.admin)
    files = {
        report.slug: client.get(
            f"{REPORTS}{report.slug}/", {"timeframe": "this_month", "format": "csv"}
        )
        for report in CATALOGUE
    }
    for scope in ("mine", "subscription"):
        files[f"export {scope}"] = client.get(EXPORT, {"scope": scope, "format": "csv"})

    assert len(files) >= 10
    bodies = {name: b"".join(response.streaming_content) for name, response in files.items()}
    for name, body in bodies.items():
        assert files[name]["Content-Type"] == "text/csv; charset=utf-8", name
        assert body[:3] == b"\xef\xbb\xbf", name
        assert body[3:4].isalpha() and body.count(b"\xef\xbb\xbf") == 1, name
    subscription = bodies["export subscription"]
    assert subscription.startswith(
        b"\xef\xbb\xbfTimestamp,User,Environment,EnvironmentId,Credits,"
        b"BaseCredits,GrantCredits,ExcessCredits,Cost,Currency\r\n"
    )
    assert csv_dicts_from(subscription)[0]["Environment"] == "Zürich 東京 / Production"
