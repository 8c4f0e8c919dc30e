"""The hot path stays on one node: every statement on a tenant table carries the subscription id.

A distributed PostgreSQL (Citus) that distributes the tenant tables by ``subscription_id``
routes a statement to one node only when the statement filters (or joins, or inserts) by that
column. This test captures the SQL of a recorded event, a batch, a balance read and each report
of the catalogue, and holds every statement that touches a tenant table (any table with a
``subscription_id`` column) to that: each reference to such a table is qualified by an
equality or ``IN`` on its ``subscription_id``, is joined on it, or inserts it, and the
statement names its subscription(s) by value (or inserts rows that carry it). Catalogue tables
(products, plans) are reference tables, copied to every node, and need nothing.
"""

import re

import pytest
import time_machine
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reports.catalogue import REPORTS
from tests.factories import utc
from tests.reports.recorder import logged_in, record_november

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 23, 10)

IDENTIFIER = r'"?([A-Za-z_][A-Za-z0-9_]*)"?'
SQL_WORDS = {
    "on",
    "where",
    "inner",
    "left",
    "right",
    "full",
    "outer",
    "join",
    "group",
    "order",
    "limit",
    "offset",
    "set",
    "values",
    "as",
    "using",
    "union",
    "cross",
    "lateral",
    "for",
    "returning",
    "having",
    "window",
    "select",
    "default",
}


# Who may see what is looked up by the person: ``visible_to`` reads the reader's memberships
# (``accounts_membership`` by ``user_id``, as the subquery ``U0``), which span subscriptions.
# This is the one read on the request path that is not keyed by the subscription; the README
# (Scaling out) lists it: a small index-only multi-shard read, or a reference table.
BY_PERSON = {("accounts_membership", "U0")}
# An API key names its subscription only through itself: authentication finds the key by its
# prefix, across subscriptions (the other allowed read; see the README).
KEY_LOOKUP = re.compile(r'FROM "accounts_apikey" .*WHERE .*"accounts_apikey"\."prefix" = ')


# Environments carry their own ``subscription_id`` (``test_distributable_schema``), but their
# reads still reach them through the project's subscription or by id: ``visible_to``
# (accounts/scoping.py), the environment report's join (reports/selectors.py) and the key
# lookup's ``select_related``. Outside this check until those filter on the column.
NOT_YET_KEYED = {"accounts_environment"}


def tenant_tables() -> set[str]:
    """Every table with a ``subscription_id`` column, from the models (M2M tables included)."""
    return {
        model._meta.db_table
        for model in apps.get_models(include_auto_created=True)
        if any(field.column == "subscription_id" for field in model._meta.concrete_fields)
    } - NOT_YET_KEYED


def references(sql: str, tables: set[str]) -> list[tuple[str, str]]:
    """(table, name it is referred to by) for each tenant table after FROM/JOIN/UPDATE/INTO."""
    found = []
    pattern = re.compile(
        rf"\b(FROM|JOIN|UPDATE|INTO)\s+{IDENTIFIER}(?:\s+(?:AS\s+)?{IDENTIFIER})?",
        re.IGNORECASE,
    )
    for match in pattern.finditer(sql):
        keyword, table, alias = match.group(1).upper(), match.group(2), match.group(3)
        if table not in tables:
            continue
        if alias is None or alias.lower() in SQL_WORDS or keyword == "INTO":
            alias = table
        found.append((keyword, table, alias))
    return found


def carries_subscription(sql: str, keyword: str, table: str, name: str) -> bool:
    if keyword == "INTO":
        columns = re.search(rf'INTO\s+"?{table}"?\s*\(([^)]*)\)', sql, re.IGNORECASE)
        return bool(columns) and "subscription_id" in columns.group(1)
    qualified = rf'(?:"?{re.escape(name)}"?\.)"?subscription_id"?'
    unqualified = r'(?<![\w."])"?subscription_id"?'
    predicate = r"\s*(?:=|IN\s*\(|=\s*ANY\s*\()"
    if re.search(qualified + predicate, sql, re.IGNORECASE):
        return True
    if re.search(r"=\s*" + qualified, sql, re.IGNORECASE):
        return True
    # A statement on one table may leave the column unqualified (UPDATE t SET ... WHERE ...).
    return keyword == "UPDATE" and bool(re.search(unqualified + predicate, sql, re.IGNORECASE))


ANCHOR = re.compile(
    r'(?:subscription_id"?|"accounts_subscription"\."id")\s*(?:=\s*\(?\d|IN\s*\(\d)',
    re.IGNORECASE,
)


def anchored(sql: str) -> bool:
    """The statement names its subscription(s) by value, or inserts rows that carry one."""
    if ANCHOR.search(sql):
        return True
    inserts = re.findall(r'INSERT\s+INTO\s+"?\w+"?\s*\(([^)]*)\)', sql, re.IGNORECASE)
    return any("subscription_id" in columns for columns in inserts)


def offending(captured) -> list[str]:
    tables = tenant_tables()
    problems = []
    for query in captured:
        sql = query["sql"]
        touched = {
            (table, name)
            for _, table, name in references(sql, tables)
            if (table, name) not in BY_PERSON
        }
        if touched and not anchored(sql) and not KEY_LOOKUP.search(sql):
            problems.append(f"not anchored to a subscription: {sql}")
        for keyword, table, name in references(sql, tables):
            if (table, name) in BY_PERSON:
                continue
            if not carries_subscription(sql, keyword, table, name):
                problems.append(f"{table} ({name}): {sql}")
    return problems


@pytest.fixture
def usage(world):
    return record_november(world)


def test_a_recorded_event_touches_one_subscription(world, usage):
    with (
        time_machine.travel(utc(2026, 11, 23, 9), tick=False),
        CaptureQueriesContext(connection) as captured,
    ):
        usage.record(at=utc(2026, 11, 23, 9), credits="2")

    assert len(captured) > 5
    assert offending(captured) == []


def test_a_repeated_event_touches_one_subscription(world, usage):
    usage.record(at=utc(2026, 11, 23, 9), idempotency_key="again", credits="2")

    with (
        CaptureQueriesContext(connection) as captured,
        time_machine.travel(utc(2026, 11, 23, 9), tick=False),
    ):
        response = usage.client.post(
            "/api/v1/events/",
            usage.payload(
                idempotency_key="again",
                credits="2",
                timestamp=utc(2026, 11, 23, 9).isoformat(),
            ),
            format="json",
        )

    assert response.status_code == 200
    assert offending(captured) == []


def test_a_batch_touches_one_subscription(world, usage):
    events = [
        {"timestamp": utc(2026, 11, 23, 8, minute).isoformat(), "agent": agent}
        for minute, agent in enumerate(["Support bot", "Researcher", "Support bot"])
    ]

    with CaptureQueriesContext(connection) as captured:
        usage.record_batch(at=utc(2026, 11, 23, 9), events=events)

    assert offending(captured) == []


def test_a_balance_read_touches_one_subscription(world, usage):
    with time_machine.travel(NOW, tick=False), CaptureQueriesContext(connection) as captured:
        response = usage.client.get(
            "/api/v1/balance/",
            {"environment": str(world.environment.public_id), "user": world.member.email},
        )

    assert response.status_code == 200
    assert offending(captured) == []


@pytest.mark.parametrize("report", [report.slug for report in REPORTS])
@pytest.mark.parametrize("timeframe", ["this_month", "last_12_months"])
def test_each_report_touches_one_subscription(world, usage, report, timeframe):
    client = logged_in(world.admin)

    with time_machine.travel(NOW, tick=False), CaptureQueriesContext(connection) as captured:
        response = client.get(f"/api/v1/reports/{report}/", {"timeframe": timeframe})

    assert response.status_code == 200
    assert offending(captured) == []


def test_the_check_sees_a_statement_without_the_subscription():
    """The check itself: a cross-tenant read is caught, a routed one is not."""
    ledger = 'FROM "credits_creditevent"'
    assert offending([{"sql": f'SELECT * {ledger} WHERE "credits_creditevent"."id" = 1'}])
    assert not offending(
        [{"sql": f'SELECT * {ledger} WHERE "credits_creditevent"."subscription_id" = 1'}]
    )
    assert offending([{"sql": f'SELECT 1 {ledger} T2 WHERE T2."period_id" = 3'}])
    assert not offending([{"sql": f'SELECT 1 {ledger} T2 WHERE T2."subscription_id" IN (1)'}])
    joined = (
        'SELECT 1 FROM "credits_agent" INNER JOIN "accounts_subscription" ON '
        '("credits_agent"."subscription_id" = "accounts_subscription"."id") WHERE '
    )
    assert offending([{"sql": joined + '"credits_agent"."name" = \'x\''}])
    assert not offending([{"sql": joined + '"accounts_subscription"."id" = 4'}])
    assert offending([{"sql": 'INSERT INTO "credits_agent" ("name") VALUES (%s)'}])
    assert not offending([{"sql": 'INSERT INTO "credits_agent" ("subscription_id") VALUES (1)'}])
