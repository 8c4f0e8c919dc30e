"""Per-member usage is a paid-plan feature, on every surface (``accounts.scoping``).

On the Free plan an admin or a project manager gets the subscription's totals and their own
rows, never another member's: not from the usage reports, not from the scheduled report email.
The data is ``record_november`` (Acme, Europe/Prague): carol (member) and bob (project manager
of Production) used credits, as did alice (admin); carol is in team Support, bob in Platform.
"""

from decimal import Decimal

import pytest
import time_machine

from accounts.models import Subscription
from reports import tasks
from reports.models import ReportSchedule
from reports.services import save_schedule
from tests.factories import utc
from tests.reports.recorder import logged_in, record_november
from tests.reports.slugs import PER_MEMBER

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 23, 10)
WEEKLY_DUE = utc(2026, 11, 23, 7, 5)  # Monday 23 November 2026, 08:05 in Prague


@pytest.fixture
def free_plan(world, teams):
    record_november(world)
    Subscription.objects.filter(pk=world.subscription.pk).update(plan=Subscription.Plan.FREE)


def report(user, name: str):
    with time_machine.travel(NOW, tick=False):
        return logged_in(user).get(f"/api/v1/reports/{name}/", {"timeframe": "this_month"})


def body_of(response) -> str:
    """The whole body, JSON or CSV, whatever the status (a refusal is fine, a leak is not)."""
    if hasattr(response, "streaming_content"):
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


@pytest.mark.parametrize("name", PER_MEMBER)
def test_a_free_plan_admin_gets_no_other_members_usage(world, free_plan, name):
    response = report(world.admin, name)

    assert response.status_code in (200, 403)
    body = body_of(response)
    for someone_else in (world.manager.email, world.member.email, "Support", "Platform"):
        assert someone_else not in body


@pytest.mark.parametrize("name", ["usage-by-user", "usage-by-team"])
def test_a_free_plan_project_manager_gets_no_other_members_usage(world, free_plan, name):
    response = report(world.manager, name)

    assert response.status_code in (200, 403)
    body = body_of(response)
    for someone_else in (world.member.email, world.admin.email, "Support"):
        assert someone_else not in body


@pytest.mark.parametrize("name", ["usage-by-user", "usage-by-team"])
def test_paid_plans_show_every_members_usage(world, teams, name):
    record_november(world)

    body = body_of(report(world.admin, name))

    assert world.member.email in body if name == "usage-by-user" else "Support" in body


def test_a_free_plan_keeps_the_subscription_totals(world, free_plan):
    """Subscription-wide rollups and the period counters name nobody: not gated."""
    products = report(world.admin, "usage-by-product").json()["results"]
    with time_machine.travel(NOW, tick=False):
        balance = logged_in(world.admin).get("/api/v1/balance/").json()

    # November: carol 1.5 + 2.25, bob 4, the key 0.25, alice 10.
    assert sum(Decimal(row["credits_consumed"]) for row in products) == Decimal("18")
    assert Decimal(balance["used"]) == Decimal("18")


def test_the_free_plan_report_email_names_no_other_member(
    world, free_plan, settings, mailoutbox, django_capture_on_commit_callbacks
):
    """Depends on the readmodel/catalogue branches: the email's members are read from
    ``DailyUsage`` (``reports.emails.scoped_usage``), which carries the totals too and so is
    not plan gated until the email reads its members through a gated rollup."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    with time_machine.travel(utc(2026, 10, 1), tick=False):
        schedule = ReportSchedule(
            subscription=world.subscription,
            created_by=world.admin,
            name="Usage report",
            recipients=["finance@acme.example"],
        )
        save_schedule(schedule=schedule, actor=world.admin)

    with (
        time_machine.travel(WEEKLY_DUE, tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        tasks.dispatch_due_reports()

    (email,) = mailoutbox
    assert "Credits used: 14.2500\n" in email.body  # the week's total, everyone's
    assert world.manager.email not in email.body
    assert world.manager.email not in email.alternatives[0][0]
