"""Who manages which report schedules, over the API and in the admin.

Subscription admins: their subscriptions' schedules. Project managers: their own schedules on
environments they manage. Members: nothing (403). The admin of another subscription: nothing
of ours (empty lists, 404 for objects).
"""

import pytest
from django.test import Client

from accounts.models import Subscription
from reports.models import Delivery, ReportSchedule
from tests.factories import utc
from tests.reports.recorder import EventRecorder, logged_in
from tests.reports.test_schedule_email import make_globex_schedule, make_schedule

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

URL = "/api/v1/report-schedules/"


def detail(schedule) -> str:
    return f"{URL}{schedule.pk}/"


def payload(**fields) -> dict:
    return {"name": "Finance weekly", "recipients": ["finance@acme.example"], **fields}


def delivery(schedule, recipient: str, **fields) -> Delivery:
    """A delivery of the week of 16 November 2026."""
    return Delivery.objects.create(
        schedule=schedule,
        recipient=recipient,
        period_start=utc(2026, 11, 16).date(),
        period_end=utc(2026, 11, 22).date(),
        **fields,
    )


def error_details(response) -> dict:
    body = response.json()
    assert body["error"]["code"] == "validation_error", body
    return body["error"]["details"]


# --- API ---------------------------------------------------------------------------------------


def test_an_admin_creates_reads_changes_and_deletes_a_schedule(world):
    client = logged_in(world.admin)

    created = client.post(
        URL,
        payload(
            recipients=["Finance@Acme.example", "finance@acme.example", "cfo@elsewhere.example"],
            attached_reports=["usage-by-user"],
        ),
        format="json",
    )

    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["subscription"] == {"id": world.subscription.pk, "name": "Acme"}
    assert body["recipients"] == ["finance@acme.example", "cfo@elsewhere.example"]
    assert (body["frequency"], body["weekday"], body["send_time"]) == ("weekly", "monday", "08:00")
    assert (body["scope"], body["environment"], body["timezone"]) == (
        "subscription",
        None,
        "Europe/Prague",
    )
    assert body["owner"] == "alice@acme.example"
    schedule_url = f"{URL}{body['id']}/"
    assert client.get(URL).json()["results"] == [body]
    changed = client.patch(
        schedule_url,
        {"frequency": "monthly", "send_time": "06:30", "attached_reports": ["credit-usage"]},
        format="json",
    )
    assert changed.status_code == 200, changed.json()
    assert (changed.json()["frequency"], changed.json()["send_time"]) == ("monthly", "06:30")
    assert client.delete(schedule_url).status_code == 204
    assert not ReportSchedule.objects.exists()


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (
            {"recipients": ["finance@acme.example", "nope", "x@"]},
            {"recipients": ["Not valid email addresses: nope, x@."]},
        ),
        (
            {"recipients": [f"person{n}@acme.example" for n in range(51)]},
            {"recipients": ["At most 50 recipients (51 given)."]},
        ),
        ({"recipients": []}, {"recipients": ["Add at least one recipient."]}),
        (
            {"attached_reports": ["credit-usage"]},
            {
                "attached_reports": [
                    "The credit usage export covers a whole billing period: attach it to "
                    "monthly reports."
                ]
            },
        ),
        (
            {"scope": "environment"},
            {"environment": ["Choose the environment to report on."]},
        ),
    ],
)
def test_invalid_schedules_are_refused_field_by_field(world, fields, errors):
    response = logged_in(world.admin).post(URL, payload(**fields), format="json")

    assert response.status_code == 400
    assert error_details(response) == errors


@pytest.mark.parametrize("report", ["usage-by-user", "usage-by-team"])
def test_on_the_free_plan_per_member_reports_cannot_be_attached(world, report):
    Subscription.objects.filter(pk=world.subscription.pk).update(plan=Subscription.Plan.FREE)
    client = logged_in(world.admin)

    refused = client.post(URL, payload(attached_reports=[report, "usage-by-agent"]), format="json")
    allowed = client.post(URL, payload(attached_reports=["usage-by-agent"]), format="json")

    assert refused.status_code == 400
    title = {"usage-by-user": "Usage by user", "usage-by-team": "Usage by team"}[report]
    assert error_details(refused) == {
        "attached_reports": [
            f"Per-member reports ({title}) are available on the Pro, Premium or Scale plans; "
            "Acme is on the Free plan."
        ]
    }
    assert allowed.status_code == 201, allowed.json()
    changed = client.patch(
        f"{URL}{allowed.json()['id']}/", {"attached_reports": [report]}, format="json"
    )
    assert changed.status_code == 400
    assert ReportSchedule.objects.get().attached_reports == ["usage-by-agent"]


def test_the_admin_of_another_subscription_sees_nothing_of_ours(world):
    schedule = make_schedule(world)
    client = logged_in(world.outsider)

    assert client.get(URL).json()["results"] == []
    assert client.get(detail(schedule)).status_code == 404
    assert client.patch(detail(schedule), {"enabled": False}, format="json").status_code == 404
    assert client.delete(detail(schedule)).status_code == 404
    foreign = client.post(URL, payload(subscription=world.subscription.pk), format="json")
    assert foreign.status_code == 404
    environment = client.post(
        URL,
        payload(scope="environment", environment=str(world.environment.public_id)),
        format="json",
    )
    assert environment.status_code == 400
    assert "environment" in error_details(environment)
    assert ReportSchedule.objects.get().enabled is True


def test_members_and_api_keys_are_refused(world):
    make_schedule(world)
    member = logged_in(world.member)
    key = EventRecorder.key_client(world.subscription)

    for client in (member, key):
        assert client.get(URL).status_code == 403
        assert client.post(URL, payload(), format="json").status_code == 403


def test_a_project_manager_schedules_reports_only_on_environments_they_manage(world):
    admins = make_schedule(world)
    client = logged_in(world.manager)
    production = str(world.environment.public_id)

    own = client.post(URL, payload(scope="environment", environment=production), format="json")
    staging = client.post(
        URL,
        payload(scope="environment", environment=str(world.other_environment.public_id)),
        format="json",
    )
    whole = client.post(URL, payload(subscription=world.subscription.pk), format="json")
    attach = client.post(
        URL,
        payload(scope="environment", environment=production, attached_reports=["usage-by-user"]),
        format="json",
    )

    assert own.status_code == 201, own.json()
    assert own.json()["environment"] == {
        "id": production,
        "name": "Website / Production",
    }
    assert error_details(staging) == {
        "environment": ["You can only schedule reports on environments you manage."]
    }
    assert error_details(whole) == {
        "scope": ["Only the subscription's admins can report on the whole of it."]
    }
    assert "attached_reports" in error_details(attach)  # the reports cover the subscription
    assert [row["id"] for row in client.get(URL).json()["results"]] == [own.json()["id"]]
    assert client.get(detail(admins)).status_code == 404
    widened = client.patch(f"{URL}{own.json()['id']}/", {"scope": "subscription"}, format="json")
    assert widened.status_code == 400
    # The subscription's admin sees (and may pause) the manager's schedule.
    admin_view = logged_in(world.admin).get(URL).json()["results"]
    assert {row["owner"] for row in admin_view} == {"alice@acme.example", "bob@acme.example"}


# --- Admin -------------------------------------------------------------------------------------


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


ADMIN_URL = "/admin/reports/reportschedule/"


def test_the_admin_lists_and_opens_only_the_subscriptions_own_schedules(world):
    ours = make_schedule(world, name="Acme weekly")
    theirs = make_globex_schedule(world)
    delivery(theirs, "globex@globex.example")
    client = admin_client(world.admin)

    listing = client.get(ADMIN_URL)
    assert listing.status_code == 200
    assert "Acme weekly" in listing.text and "Globex weekly" not in listing.text
    assert client.get(f"{ADMIN_URL}{ours.pk}/change/").status_code == 200
    assert client.get(f"{ADMIN_URL}{theirs.pk}/change/").status_code == 302  # "doesn't exist"
    log = client.get("/admin/reports/delivery/")
    assert log.status_code == 200 and "globex@globex.example" not in log.text
    assert admin_client(world.manager).get(ADMIN_URL).status_code == 302  # not staff: log in


def test_the_admin_form_shows_validation_errors_and_records_the_owner(world):
    client = admin_client(world.admin)
    form = {
        "subscription": world.subscription.pk,
        "name": "Finance",
        "enabled": "on",
        "frequency": "weekly",
        "weekday": 0,
        "send_time": "08:00",
        "scope": "subscription",
        "recipients": "finance@acme.example, not-an-address",
        "unsubscribes-TOTAL_FORMS": 0,
        "unsubscribes-INITIAL_FORMS": 0,
    }

    refused = client.post(f"{ADMIN_URL}add/", form)
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors == {
        "recipients": ["Not valid email addresses: not-an-address."]
    }
    elsewhere = client.post(
        f"{ADMIN_URL}add/",
        {
            **form,
            "recipients": "a@acme.example",
            "scope": "environment",
            "environment": world.foreign_environment.pk,
        },
    )
    assert "environment" in elsewhere.context["adminform"].form.errors  # not a choice here

    created = client.post(
        f"{ADMIN_URL}add/", {**form, "recipients": "Finance@acme.example\nfinance@acme.example"}
    )
    assert created.status_code == 302
    schedule = ReportSchedule.objects.get()
    assert (schedule.created_by, schedule.recipients) == (world.admin, ["finance@acme.example"])
    page = client.get(f"{ADMIN_URL}{schedule.pk}/change/")
    assert "Nothing sent yet." in page.text
    assert "finance@acme.example" in page.text


def test_send_a_test_now_emails_the_admin_and_records_no_delivery(world, mailoutbox):
    schedule = make_schedule(world)
    client = admin_client(world.admin)

    response = client.post(
        ADMIN_URL, {"action": "send_test_now", "_selected_action": [schedule.pk]}, follow=True
    )

    assert response.status_code == 200
    (email,) = mailoutbox
    assert email.to == ["alice@acme.example"]
    assert email.subject.startswith("[Test] Usage report: Acme, ")
    assert "This is a test sent from the admin." in email.body
    assert not Delivery.objects.exists()


def test_resend_failed_sends_the_failed_deliveries_once(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    schedule = make_schedule(world)
    failed = delivery(schedule, "finance@acme.example", status="failed", attempts=11)
    delivery(schedule, "team.lead@outside.example", status="sent")
    selected = list(Delivery.objects.values_list("pk", flat=True))

    with django_capture_on_commit_callbacks(execute=True):
        admin_client(world.outsider).post(
            "/admin/reports/delivery/", {"action": "resend", "_selected_action": selected}
        )
    failed.refresh_from_db()
    assert (failed.status, mailoutbox) == ("failed", [])  # not theirs to resend

    with django_capture_on_commit_callbacks(execute=True):
        admin_client(world.admin).post(
            ADMIN_URL, {"action": "resend_failed", "_selected_action": [schedule.pk]}
        )

    assert [email.to for email in mailoutbox] == [["finance@acme.example"]]
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("sent", 12)


def test_deleting_a_schedule_in_the_admin_takes_its_delivery_log_along(world):
    schedule = make_schedule(world)
    delivery(schedule, "finance@acme.example", status="sent")
    client = admin_client(world.admin)

    assert client.get(f"{ADMIN_URL}{schedule.pk}/delete/").status_code == 200
    response = client.post(f"{ADMIN_URL}{schedule.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not ReportSchedule.objects.exists() and not Delivery.objects.exists()
    assert admin_client(world.admin).get("/admin/reports/delivery/").status_code == 200
