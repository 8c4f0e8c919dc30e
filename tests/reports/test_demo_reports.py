"""The demo as a new user meets it: labelled report rows, agents added over time, and the
emails it sends on its first start (a scheduled report with its CSVs, and an 80% alert).

The demo is seeded once for the module, at a fixed instant, in a transaction rolled back at the
end; the emails that the seed queues at commit are captured and sent by the test that wants
them, with Celery eager, as the worker would when the demo starts.
"""

import csv
import io
import re
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import transaction
from django.db.models import F
from django.test import TestCase, override_settings

from accounts.models import Subscription, User
from core.display import format_money
from credits.models import Agent, BillingPeriod, CreditEvent, ThresholdAlert
from reports.models import Delivery, ReportSchedule
from reports.schedules import latest_due
from tests.reports.recorder import logged_in
from tests.reports.test_report_totals import GROUPS as LABELS  # each report's naming column
from tests.reports.test_statements import ledger_by_price, money

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 18, 9, 30, tzinfo=UTC)  # a Wednesday
REPORTS = "/api/v1/reports/"
FAST_PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="module")
def demo(django_db_setup, django_db_blocker):
    """The demo seeded at ``NOW`` (three months of history), and the callbacks it left for the
    commit (queueing its emails)."""
    with (
        django_db_blocker.unblock(),
        time_machine.travel(NOW, tick=False),
        override_settings(PASSWORD_HASHERS=FAST_PASSWORD_HASHERS),
        transaction.atomic(),
    ):
        with TestCase.captureOnCommitCallbacks() as callbacks:
            call_command("seed_demo", "--months", "3", "--scale", "0.05", stdout=StringIO())
        yield callbacks
        transaction.set_rollback(True)


def report(user, name: str, **params) -> list[dict]:
    response = logged_in(user).get(f"{REPORTS}{name}/", {"page_size": 1000, **params})
    assert response.status_code == 200, response.json()
    return response.json()["results"]


def alice() -> User:
    return User.objects.get(email="alice@acme.example")


@pytest.mark.parametrize("timeframe", ["this_month", "last_month", "last_3_months"])
@pytest.mark.parametrize("include_sub_accounts", ["false", "true"])
def test_every_row_of_every_report_has_a_label_of_its_own(demo, timeframe, include_sub_accounts):
    for name, label in LABELS.items():
        params = {"timeframe": timeframe}
        if name != "usage-by-sub-account":  # it always includes them
            params["include_sub_accounts"] = include_sub_accounts
        rows = report(alice(), name, **params)

        labels = [row[label] for row in rows]
        assert rows, name
        assert all(labels), (name, labels)
        assert len(set(labels)) == len(labels), (name, labels)


def test_rows_without_an_agent_or_a_team_say_so(demo):
    agents = {
        row["agent_name"]: row for row in report(alice(), "usage-by-agent", timeframe="this_month")
    }
    teams = {row["team"]: row for row in report(alice(), "usage-by-team", timeframe="this_month")}

    assert agents["No agent"]["agent_id"] is None
    assert agents["No agent"]["total_runs"] > 0
    assert teams["No team"]["team_id"] is None  # the API keys, and Alice, who is in none
    assert teams["No team"]["total_runs"] > 0


def test_keys_of_the_same_name_in_two_accounts_are_told_apart(demo):
    alone = [row["user_email"] for row in report(alice(), "usage-by-user", timeframe="this_month")]
    together = [
        row["user_email"]
        for row in report(
            alice(), "usage-by-user", timeframe="this_month", include_sub_accounts="true"
        )
        if row["role"] == "api_key"
    ]

    assert "Demo key" in alone  # one account: the key's name is enough
    assert {"Demo key (Acme Corp)", "Demo key (Acme Labs)"} <= set(together)


def test_agents_are_added_over_the_months_so_past_timeframes_count_them(demo):
    created = sorted(Agent.objects.values_list("created_at", flat=True))
    assert created[0] < created[-1]
    assert len({moment.date() for moment in created}) > 3

    for timeframe in ("last_month", "last_3_months"):
        rows = report(alice(), "usage-by-user", timeframe=timeframe)
        assert sum(row["agents_created"] for row in rows) > 0, timeframe
    # No run uses an agent before it was added.
    assert not CreditEvent.objects.filter(timestamp__lt=F("agent__created_at")).exists()
    assert all(moment <= NOW for moment in created)


def csv_files(email) -> list[str]:
    names = [
        part.get_filename()
        for part in email.attachments
        if getattr(part, "get_content_type", lambda: "")() == "text/csv"
    ]
    assert all(name.endswith(".csv") for name in names)
    return names


def test_the_first_start_sends_a_report_with_its_csvs_and_an_80_percent_alert(
    demo, settings, mailoutbox
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.CELERY_TASK_EAGER_PROPAGATES = True
    schedules = ReportSchedule.objects.filter(subscription__name="Acme Corp")
    assert {schedule.frequency for schedule in schedules} == {"weekly", "monthly"}
    alert = ThresholdAlert.objects.get(notified_at__isnull=True)
    assert alert.threshold == ThresholdAlert.Threshold.ALLOCATION_80

    with time_machine.travel(NOW, tick=False):
        for callback in demo:  # what the worker does with the queued tasks when it starts
            callback()

    reports = [email for email in mailoutbox if email.attachments]
    alerts = [email for email in mailoutbox if "crossed 80%" in email.subject]
    assert {email.to[0] for email in reports} >= {"alice@acme.example", "finance@acme.example"}
    weekly = next(email for email in reports if "Weekly AI usage" in email.subject)
    assert len(csv_files(weekly)) == 3
    monthly = next(email for email in reports if "Monthly credits" in email.subject)
    # Usage by product and by sub-account, every event, and the latest closed statement.
    assert len(csv_files(monthly)) == 4
    (statement,) = [part for part in monthly.attachments if "_statement_" in part.get_filename()]
    with time_machine.travel(NOW, tick=False):  # the same bytes as the API's February CSV
        api = logged_in(alice()).get("/api/v1/statements/2026-02/", {"format": "csv"})
    assert statement.get_payload(decode=True) == b"".join(api.streaming_content)
    (email,) = alerts
    assert "crossed 80% of its base allocation" in email.body
    assert re.search(r"; usage (is now|ended the period at) \d+\.\d%\.", email.body)
    assert not Delivery.objects.exclude(status=Delivery.Status.SENT).exists()
    alert.refresh_from_db()
    assert alert.notified_at is not None


def test_the_weekly_and_monthly_reports_cover_the_last_week_and_month(demo):
    for schedule in ReportSchedule.objects.filter(subscription__name="Acme Corp"):
        period = latest_due(
            frequency=schedule.frequency,
            weekday=schedule.weekday,
            send_time=schedule.send_time,
            zone=schedule.subscription.zone,
            now=NOW,
        )
        assert schedule.last_due_at == period.due_at
        assert Delivery.objects.filter(
            schedule=schedule, period_start=period.first_day, period_end=period.last_day
        ).exists()


def test_a_closed_demo_month_has_a_statement_equal_to_its_ledger_to_the_cent(demo, client):
    """February is the demo's latest closed month. Acme Corp's statement, in JSON, in CSV and
    on the admin page, prices its ledger's base and excess credits line by line at the plan's
    EUR prices, adds Acme Labs' own statement (priced at its override) as a sub-account line,
    and totals them to the cent."""
    acme, labs = (
        Subscription.objects.get(name="Acme Corp"),
        Subscription.objects.get(name="Acme Labs"),
    )
    statements = logged_in(alice())
    with time_machine.travel(NOW, tick=False):
        body = statements.get("/api/v1/statements/2026-02/").json()
        labs_body = statements.get("/api/v1/statements/2026-02/", {"subscription": labs.pk}).json()
        as_csv = statements.get("/api/v1/statements/2026-02/", {"format": "csv"})
        client.force_login(alice())
        page = client.get("/admin/statements/", {"subscription": acme.pk, "month": "2026-02"})

    for account, statement in ((acme, body), (labs, labs_body)):
        period = BillingPeriod.objects.filter(subscription=account, end__lte=NOW).latest("start")
        ledger = ledger_by_price(account, period.start, period.end)
        expected = sorted(
            (kind, f"{sums[kind]:f}", money(sums[kind] * price))
            for (credit_price, excess_price), sums in ledger.items()
            for kind, price in (("base", credit_price), ("excess", excess_price))
            if sums[kind]
        )
        lines = sorted(
            (line["kind"], line["credits"], Decimal(line["amount"]))
            for line in statement["lines"]
            if line["kind"] in ("base", "excess")
        )
        assert statement["currency"] == "EUR" and statement["closed"] is True
        assert lines == expected and sum(amount for *_, amount in lines) > 0
    (labs_line,) = [line for line in body["lines"] if line["kind"] == "sub_account"]
    assert labs_line["amount"] == labs_body["total"]
    amounts = [Decimal(line["amount"]) for line in body["lines"] if line["amount"] is not None]
    assert Decimal(body["total"]) == sum(amounts)
    rows = list(csv.reader(io.StringIO(b"".join(as_csv.streaming_content).decode("utf-8-sig"))))
    assert rows[-1][0] == "total" and rows[-1][6] == body["total"]
    # The exact total, and as people read it: money with its currency.
    total = format_money(Decimal(body["total"]), body["currency"])
    assert (
        f'data-figure="statement-total" data-value="{body["total"]}">{total}<'
        in page.content.decode()
    )
