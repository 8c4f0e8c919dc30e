"""What a scheduled report says, section by section, checked against the ledger; and its CSV
attachments, byte for byte what the export endpoints return for the same period and scope.

The data is ``record_november`` (Acme, Europe/Prague). Reports are sent by running beat's task
with time frozen, as production would, with Celery eager and commit callbacks executed.
"""

import csv
import io
from decimal import Decimal

import pytest
import time_machine
from django.db.models import Sum

from accounts.models import Subscription
from credits.models import CreditEvent
from reports import tasks
from reports.models import ReportSchedule
from reports.services import save_schedule
from tests.factories import utc
from tests.reports.recorder import logged_in, record_november

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery", "site_url")]

CREATED = utc(2026, 10, 1)
WEEKLY_DUE = utc(2026, 11, 23, 7, 5)  # Monday 23 November 2026, 08:05 in Prague
MONTHLY_DUE = utc(2026, 12, 1, 7, 5)  # Tuesday 1 December 2026, 08:05 in Prague
RECIPIENTS = ["finance@acme.example", "Team.Lead@Outside.example"]


@pytest.fixture
def usage(world):
    return record_november(world)


def make_schedule(world, *, created=CREATED, **fields) -> ReportSchedule:
    """A schedule saved as the API and the admin save it (on 1 October 2026 by default)."""
    values = {
        "subscription": world.subscription,
        "created_by": world.admin,
        "name": "Usage report",
        "recipients": list(RECIPIENTS),
    }
    values.update(fields)
    with time_machine.travel(created, tick=False):
        schedule = ReportSchedule(**values)
        return save_schedule(schedule=schedule, actor=schedule.created_by)


def make_globex_schedule(world, **fields) -> ReportSchedule:
    """Globex's schedule, owned by its admin: what no one of Acme may reach."""
    values = {"subscription": world.other_subscription, "created_by": world.outsider}
    return make_schedule(world, name="Globex weekly", **values, **fields)


def run_beat(at, capture) -> int:
    """Beat's periodic task at ``at``; the send tasks it queues run at commit (eagerly)."""
    with time_machine.travel(at, tick=False), capture(execute=True):
        return tasks.dispatch_due_reports()


def ledger_total(world, start, end, **filters) -> Decimal:
    events = CreditEvent.objects.filter(
        subscription=world.subscription, timestamp__gte=start, timestamp__lt=end, **filters
    )
    return events.aggregate(total=Sum("credits"))["total"]


def html_of(email) -> str:
    (html, mimetype) = email.alternatives[0]
    assert mimetype == "text/html"
    return html


def attachments_of(email) -> dict[str, bytes]:
    return {
        part.get_filename(): part.get_payload(decode=True)
        for part in email.message().walk()
        if part.get_content_disposition() == "attachment"
    }


def csv_from(response) -> tuple[str, bytes]:
    assert response.status_code == 200, response.content
    filename = response["Content-Disposition"].split('filename="')[1].rstrip('"')
    return filename, b"".join(response.streaming_content)


def test_the_weekly_report_states_each_section_as_the_ledger_has_it(
    world, usage, mailoutbox, django_capture_on_commit_callbacks
):
    schedule = make_schedule(world)

    run_beat(WEEKLY_DUE, django_capture_on_commit_callbacks)

    assert sorted(email.to[0] for email in mailoutbox) == [
        "finance@acme.example",
        "team.lead@outside.example",
    ]
    email = mailoutbox[0]
    # The week of Monday 16 to Sunday 22 November, local days in Prague.
    week = ledger_total(world, utc(2026, 11, 15, 23), utc(2026, 11, 22, 23))
    previous = ledger_total(world, utc(2026, 11, 8, 23), utc(2026, 11, 15, 23))
    assert (week, previous) == (Decimal("14.25"), Decimal("3.75"))
    assert email.subject == "Usage report: Acme, 16\N{EN DASH}22 November 2026"
    body = email.body
    assert "Credit usage, 16\N{EN DASH}22 November 2026" in body
    assert "Monday 16 November 2026 to Sunday 22 November 2026, Europe/Prague time" in body
    assert "Credits used: 14.2500\n" in body
    assert "Trend: +280.0% vs the previous week (3.7500)" in body  # (14.25 - 3.75) / 3.75
    assert "Excess credits: 0.0000\n" in body
    # The billing period holding the week, as of the report: all of November so far.
    assert ledger_total(world, utc(2026, 10, 31, 23), WEEKLY_DUE) == Decimal("18")
    assert (
        "Acme, November 2026 (so far): 18.0000 of 1,000.0000 credits used (1.8%), "
        "982.0000 remaining, excess used 0.0000" in body
    )
    # alice 10 and bob 4 (the API key's 0.25 belongs to nobody), shares of the week's 14.25.
    assert (
        "TOP MEMBERS\n1. alice@acme.example: 10.0000 (70.2%)\n2. bob@acme.example: 4.0000 (28.1%)\n"
        in (body)
    )
    assert "TOP PRODUCTS\n1. AI agent: 14.2500 (100.0%)\n" in body
    assert (
        "As of 23 November 2026, 08:05 CET (Europe/Prague). Late usage can still be added until "
        "3 December 2026, 00:00 CET, so these figures may still grow." in body
    )
    dashboard = (
        f"https://creditdesk.example/admin/credit-usage/?subscription={world.subscription.pk}"
        "&amp;period=2026-11&amp;from=2026-11-16&amp;to=2026-11-22"
    )
    html = html_of(email)
    assert dashboard in html
    assert dashboard.replace("&amp;", "&") in body
    assert ">14.2500</p>" in html
    assert "+280.0% vs the previous week (3.7500)" in html
    assert "alice@acme.example</td>" in html
    schedule.refresh_from_db()
    assert schedule.last_due_at == utc(2026, 11, 23, 7)


def test_the_html_uses_inline_styles_and_embeds_the_chart_as_a_png(
    world, usage, mailoutbox, django_capture_on_commit_callbacks
):
    make_schedule(world, recipients=["finance@acme.example"])

    run_beat(WEEKLY_DUE, django_capture_on_commit_callbacks)

    (email,) = mailoutbox
    html = html_of(email)
    assert "<style" not in html and "class=" not in html and "<link" not in html
    assert 'src="cid:daily-credits-chart"' in html
    message = email.message()
    assert message.get_content_type() == "multipart/related"  # no CSV attached here
    alternative, image = message.get_payload()
    assert alternative.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in alternative.get_payload()] == [
        "text/plain",
        "text/html",
    ]
    assert image.get_content_type() == "image/png"
    assert image["Content-ID"] == "<daily-credits-chart>"
    assert image.get_payload(decode=True).startswith(b"\x89PNG\r\n\x1a\n")
    assert message["Auto-Submitted"] == "auto-generated"


def test_the_monthly_report_covers_the_closed_billing_period_and_its_late_window(
    world, usage, mailoutbox, django_capture_on_commit_callbacks
):
    make_schedule(
        world, frequency="monthly", recipients=["finance@acme.example"], created=utc(2026, 11, 2)
    )

    run_beat(utc(2026, 12, 1, 6, 55), django_capture_on_commit_callbacks)
    assert mailoutbox == []  # 07:55 in Prague: not yet
    run_beat(MONTHLY_DUE, django_capture_on_commit_callbacks)

    (email,) = mailoutbox
    body = email.body
    november = ledger_total(world, utc(2026, 10, 31, 23), utc(2026, 11, 30, 23))
    october = ledger_total(world, utc(2026, 9, 30, 22), utc(2026, 10, 31, 23))
    assert (november, october) == (Decimal("18"), Decimal("7"))
    assert email.subject == "Usage report: Acme, November 2026"
    assert "Credits used: 18.0000\n" in body
    assert "Trend: +157.1% vs the previous month (7.0000)" in body
    assert (
        "Acme, November 2026 (ended): 18.0000 of 1,000.0000 credits used (1.8%), 982.0000 remaining"
        in body
    )
    assert (
        "1. alice@acme.example: 10.0000 (55.6%)\n2. bob@acme.example: 4.0000 (22.2%)\n"
        "3. carol@acme.example: 3.7500 (20.8%)\n" in body
    )
    # The period ended at midnight on 1 December; late events are taken for 48 more hours.
    assert (
        "As of 1 December 2026, 08:05 CET (Europe/Prague). Late usage can still be added until "
        "3 December 2026, 00:00 CET, so these figures may still grow." in body
    )


def test_an_environment_report_shows_only_that_environment(
    world, usage, mailoutbox, django_capture_on_commit_callbacks
):
    make_schedule(
        world,
        created_by=world.manager,
        scope="environment",
        environment=world.environment,
        recipients=["lead@outside.example"],
    )

    run_beat(WEEKLY_DUE, django_capture_on_commit_callbacks)

    (email,) = mailoutbox
    body = email.body
    production = {"environment": world.environment}
    assert ledger_total(world, utc(2026, 11, 15, 23), utc(2026, 11, 22, 23), **production) == 4
    assert email.subject == "Usage report: Acme \N{MIDDLE DOT} Website / Production, " + (
        "16\N{EN DASH}22 November 2026"
    )
    assert "Credits used: 4.0000\n" in body
    assert "Trend: +6.7% vs the previous week (3.7500)" in body
    assert "1. bob@acme.example: 4.0000 (100.0%)\n" in body
    assert "alice" not in body  # her usage is in Staging
    assert "; 7.7500 in this environment" in body  # November so far, in Production
    assert f"/usage/environments/?environment={world.environment.public_id}" in body


def test_a_report_with_sub_accounts_adds_them_and_lists_each_account(
    world, usage, mailoutbox, django_capture_on_commit_callbacks
):
    usage.record_sub_account(at=utc(2026, 11, 18, 9), credits="5", timezone="Pacific/Auckland")
    make_schedule(
        world,
        scope="with_sub_accounts",
        attached_reports=["usage-by-sub-account"],
        recipients=["finance@acme.example"],
    )

    run_beat(WEEKLY_DUE, django_capture_on_commit_callbacks)

    (email,) = mailoutbox
    assert "Credits used: 19.2500\n" in email.body  # 14.25 in Acme and 5 in Acme Labs
    assert "Acme, November 2026 (so far): 18.0000 of 1,000.0000" in email.body
    assert "Acme Labs, November 2026 (so far): 5.0000 of 1,000.0000" in email.body
    with time_machine.travel(WEEKLY_DUE, tick=False):
        filename, expected = csv_from(
            logged_in(world.admin).get(
                "/api/v1/reports/usage-by-sub-account/",
                {
                    "start": "2026-11-16",
                    "end": "2026-11-22",
                    "subscription": world.subscription.pk,
                    "format": "csv",
                },
            )
        )
    assert attachments_of(email) == {filename: expected}
    rows = list(csv.reader(io.StringIO(expected.decode())))
    assert [(row[0], row[4]) for row in rows[1:]] == [("Acme", "14.2500"), ("Acme Labs", "5.0000")]


def test_on_the_free_plan_the_report_names_no_member_and_attaches_no_per_member_file(
    world, usage, mailoutbox, django_capture_on_commit_callbacks
):
    """Per-member usage is a Pro, Premium and Scale feature: a schedule set up on Pro that
    attached usage by user and by team sends neither, nor TOP MEMBERS, once on Free."""
    make_schedule(
        world,
        attached_reports=["usage-by-user", "usage-by-product", "usage-by-team"],
        recipients=["finance@acme.example"],
    )
    Subscription.objects.filter(pk=world.subscription.pk).update(plan=Subscription.Plan.FREE)

    run_beat(WEEKLY_DUE, django_capture_on_commit_callbacks)

    (email,) = mailoutbox
    html = html_of(email)
    assert "TOP MEMBERS" not in email.body
    assert "Top members" not in html
    for text in (email.body, html):
        assert "Usage per member is available on the Pro, Premium or Scale plans." in text
        assert "alice@acme.example" not in text
        assert "bob@acme.example" not in text
    assert "TOP PRODUCTS\n1. AI agent: 14.2500 (100.0%)\n" in email.body
    assert list(attachments_of(email)) == ["acme_usage-by-product_2026-11-16_2026-11-22.csv"]


def test_weekly_attachments_equal_the_report_endpoints_for_the_same_days(
    world, usage, mailoutbox, django_capture_on_commit_callbacks
):
    make_schedule(
        world,
        attached_reports=["usage-by-product", "usage-by-user"],
        recipients=["finance@acme.example"],
    )

    run_beat(WEEKLY_DUE, django_capture_on_commit_callbacks)

    (email,) = mailoutbox
    client = logged_in(world.admin)
    expected = {}
    with time_machine.travel(WEEKLY_DUE, tick=False):
        for report in ("usage-by-user", "usage-by-product"):
            filename, content = csv_from(
                client.get(
                    f"/api/v1/reports/{report}/",
                    {"start": "2026-11-16", "end": "2026-11-22", "format": "csv"},
                )
            )
            expected[filename] = content
    assert attachments_of(email) == expected
    assert set(expected) == {
        "acme_usage-by-user_2026-11-16_2026-11-22.csv",
        "acme_usage-by-product_2026-11-16_2026-11-22.csv",
    }
    assert email.message().get_content_type() == "multipart/mixed"
    assert "ATTACHED\nacme_usage-by-user_2026-11-16_2026-11-22.csv\n" in email.body


def test_monthly_attachments_equal_the_export_and_report_endpoints(
    world, usage, mailoutbox, django_capture_on_commit_callbacks
):
    make_schedule(
        world,
        frequency="monthly",
        attached_reports=["credit-usage", "usage-by-agent"],
        recipients=["finance@acme.example"],
        created=utc(2026, 11, 2),
    )
    client = logged_in(world.admin)
    # The export endpoint exports the current billing period: ask it while November is on.
    with time_machine.travel(utc(2026, 11, 30, 22), tick=False):
        export = csv_from(
            client.get("/api/v1/exports/credit-usage/", {"scope": "subscription", "format": "csv"})
        )

    run_beat(MONTHLY_DUE, django_capture_on_commit_callbacks)

    with time_machine.travel(MONTHLY_DUE, tick=False):
        agents = csv_from(
            client.get("/api/v1/reports/usage-by-agent/", {"period": "2026-11", "format": "csv"})
        )
        # November is in its grace window: the latest closed statement is October's.
        statement = csv_from(client.get("/api/v1/statements/2026-10/", {"format": "csv"}))
    (email,) = mailoutbox
    assert attachments_of(email) == dict([export, agents, statement])
    assert statement[0] == "acme_statement_2026-10.csv"
    assert export[0] == "acme_credit-usage-subscription_2026-11.csv"
    assert export[1].count(b"\r\n") == 6  # the header and November's five events


def test_files_too_large_for_an_email_are_named_instead_of_attached(
    world, usage, mailoutbox, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("reports.emails.MAX_ATTACHMENT_BYTES", 1)
    make_schedule(world, attached_reports=["usage-by-user"], recipients=["finance@acme.example"])

    run_beat(WEEKLY_DUE, django_capture_on_commit_callbacks)

    (email,) = mailoutbox
    assert attachments_of(email) == {}
    assert (
        "Too large to attach (over 0 MB together): acme_usage-by-user_2026-11-16_2026-11-22.csv"
        in email.body
    )
