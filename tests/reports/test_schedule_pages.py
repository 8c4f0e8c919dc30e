"""A project manager's report schedules on their own pages (``/usage/schedules/``), and "Send
a test now" from a schedule's page, theirs or the admin's.

The rules are the API's (``test_schedule_permissions``): a manager reaches the schedules they
own on environments they manage, nothing of other environments or subscriptions; a member
nothing at all.
"""

import pytest
from django.test import Client

from accounts.audit import AuditEvent
from reports.models import Delivery, ReportSchedule
from tests import factories
from tests.reports.test_schedule_email import make_globex_schedule, make_schedule

pytestmark = pytest.mark.django_db

PAGES = "/usage/schedules/"


def page(schedule, suffix: str = "") -> str:
    return f"{PAGES}{schedule.pk}/{suffix}"


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def fields(environment, **overrides) -> dict:
    return {
        "name": "Production weekly",
        "enabled": "on",
        "frequency": "weekly",
        "weekday": 0,
        "send_time": "08:00",
        "environment": environment.pk,
        "recipients": "Ops@acme.example\nops@acme.example, lead@acme.example",
        **overrides,
    }


@pytest.fixture
def managers_schedule(world):
    return make_schedule(
        world,
        name="Production weekly",
        created_by=world.manager,
        scope="environment",
        environment=world.environment,
    )


def test_a_manager_creates_edits_pauses_and_deletes_a_schedule(world):
    bob = browser(world.manager)

    created = bob.post(f"{PAGES}new/", fields(world.environment))

    schedule = ReportSchedule.objects.get()
    assert created.status_code == 302 and created.url == page(schedule)
    assert (schedule.subscription, schedule.scope, schedule.environment, schedule.created_by) == (
        world.subscription,
        "environment",
        world.environment,
        world.manager,
    )
    assert schedule.recipients == ["ops@acme.example", "lead@acme.example"]
    listing = bob.get(PAGES)
    assert listing.status_code == 200 and "Production weekly" in listing.text

    edited = bob.post(
        page(schedule),
        fields(world.environment, frequency="monthly", attached_reports=["credit-usage"]),
    )
    assert edited.status_code == 302
    schedule.refresh_from_db()
    assert (schedule.frequency, schedule.attached_reports) == ("monthly", ["credit-usage"])

    bob.post(page(schedule, "pause/"))
    schedule.refresh_from_db()
    assert schedule.enabled is False
    assert "Resume" in bob.get(page(schedule)).text
    bob.post(page(schedule, "pause/"))
    schedule.refresh_from_db()
    assert schedule.enabled is True

    assert bob.get(page(schedule, "delete/")).status_code == 200  # asks first
    assert bob.post(page(schedule, "delete/")).url == PAGES
    assert not ReportSchedule.objects.exists()
    assert list(
        AuditEvent.objects.filter(subscription=world.subscription)
        .order_by("at", "pk")
        .values_list("action", flat=True)
    ) == [
        "schedule.created",
        "schedule.changed",
        "schedule.changed",
        "schedule.changed",
        "schedule.deleted",
    ]


def test_the_form_shows_the_models_validation_and_offers_only_managed_environments(world):
    bob = browser(world.manager)

    form = bob.get(f"{PAGES}new/").context["form"]
    assert list(form.fields["environment"].queryset) == [world.environment]
    staging = bob.post(f"{PAGES}new/", fields(world.other_environment))
    weekly_export = bob.post(
        f"{PAGES}new/", fields(world.environment, attached_reports=["credit-usage"])
    )
    no_one = bob.post(f"{PAGES}new/", fields(world.environment, recipients=" "))

    assert "environment" in staging.context["form"].errors
    assert weekly_export.context["form"].errors == {
        "attached_reports": [
            "The credit usage export covers a whole billing period: attach it to monthly reports."
        ]
    }
    assert "recipients" in no_one.context["form"].errors
    assert not ReportSchedule.objects.exists()


def test_a_manager_reaches_no_schedule_of_other_environments_or_subscriptions(
    world, managers_schedule
):
    staging = make_schedule(
        world, name="Staging weekly", scope="environment", environment=world.other_environment
    )
    whole = make_schedule(world, name="Acme weekly")
    globex = make_globex_schedule(world, scope="environment", environment=world.foreign_environment)
    bob = browser(world.manager)

    listing = bob.get(PAGES).text
    assert "Production weekly" in listing
    for name in ("Staging weekly", "Acme weekly", "Globex weekly"):
        assert name not in listing
    for schedule in (staging, whole, globex):
        assert bob.get(page(schedule)).status_code == 404
        assert bob.post(page(schedule), fields(world.environment)).status_code == 404
        assert bob.post(page(schedule, "pause/")).status_code == 404
        assert bob.post(page(schedule, "delete/")).status_code == 404
        assert bob.post(page(schedule, "send-test/")).status_code == 404
    assert ReportSchedule.objects.filter(enabled=True).count() == 4


def test_a_member_gets_nothing(world, managers_schedule):
    carol = browser(world.member)

    assert carol.get(PAGES).status_code == 403
    assert carol.post(f"{PAGES}new/", fields(world.environment)).status_code == 403
    assert carol.get(page(managers_schedule)).status_code == 403  # as the list: not a manager
    assert carol.post(page(managers_schedule, "delete/")).status_code == 404
    assert ReportSchedule.objects.count() == 1


def test_an_api_key_gets_nothing(world, managers_schedule):
    _, secret = factories.api_key(world.other_subscription)
    machine = Client(HTTP_AUTHORIZATION=f"Api-Key {secret}")

    response = machine.get(page(managers_schedule))

    assert response.status_code == 302 and response.url.startswith("/login/")


def test_send_a_test_now_from_the_managers_page(world, managers_schedule, mailoutbox):
    bob = browser(world.manager)

    response = bob.post(page(managers_schedule, "send-test/"), follow=True)

    assert response.status_code == 200
    assert "Sent a test of “Production weekly”" in response.text
    (email,) = mailoutbox
    assert email.to == ["bob@acme.example"]
    assert email.subject.startswith("[Test] ")
    assert not Delivery.objects.exists()


def test_send_a_test_now_from_the_admins_change_page(world, mailoutbox):
    ours = make_schedule(world)
    theirs = make_globex_schedule(world)
    alice = browser(world.admin)
    button = f"/admin/reports/reportschedule/{ours.pk}/send-test/"

    change_page = alice.get(f"/admin/reports/reportschedule/{ours.pk}/change/")
    assert f'action="{button}"' in change_page.text
    assert alice.get(button).status_code == 405
    sent = alice.post(button)
    refused = alice.post(f"/admin/reports/reportschedule/{theirs.pk}/send-test/")

    assert sent.url == f"/admin/reports/reportschedule/{ours.pk}/change/"
    assert refused.status_code == 404
    (email,) = mailoutbox
    assert email.to == ["alice@acme.example"]
    assert email.subject.startswith("[Test] Usage report: Acme, ")
