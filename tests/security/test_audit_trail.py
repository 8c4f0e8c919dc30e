"""Changes to limits, roles, API keys, limit settings and schedules leave an audit trail, made
over the API or in the admin, that the subscription's admins (and nobody else) can read."""

from decimal import Decimal

import pytest
from django.contrib import admin
from rest_framework.test import APIClient

from accounts.audit import AuditedAdminMixin, AuditEvent
from accounts.models import Membership, Role
from credits.models import CreditLimit
from tests import factories

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def trail(subscription, **filters) -> list[tuple]:
    return list(
        AuditEvent.objects.filter(subscription=subscription, **filters)
        .order_by("pk")
        .values_list("actor_label", "action", "object_type", "changes")
    )


def test_limit_changes_over_the_api_are_audited(world):
    client = api(world.admin)
    url = f"/api/v1/limits/users/{world.member.pk}/"

    assert client.put(url, {"credits": "100"}, format="json").status_code == 200
    assert client.put(url, {"credits": "100.0000"}, format="json").status_code == 200  # no change
    assert client.put(url, {"credits": "50.5"}, format="json").status_code == 200
    assert client.delete(url).status_code == 204

    assert trail(world.subscription) == [
        ("alice@acme.example", "limit.set", "credits.creditlimit", {"credits": [None, "100.0000"]}),
        (
            "alice@acme.example",
            "limit.set",
            "credits.creditlimit",
            {"credits": ["100.0000", "50.5000"]},
        ),
        (
            "alice@acme.example",
            "limit.removed",
            "credits.creditlimit",
            {"credits": ["50.5000", None]},
        ),
    ]


def test_team_limits_keys_and_limit_settings_over_the_api_are_audited(world):
    team = factories.TeamFactory(subscription=world.subscription, name="Writers")
    client = api(world.admin)

    client.put(f"/api/v1/limits/teams/{team.pk}/", {"credits": "10"}, format="json")
    created = client.post("/api/v1/api-keys/", {"name": "Backend"}, format="json").json()
    client.post(f"/api/v1/api-keys/{created['prefix']}/revoke/")
    client.post(f"/api/v1/api-keys/{created['prefix']}/revoke/")  # again: nothing changes
    client.patch(
        "/api/v1/subscription/", {"limit_mode": "soft", "excess_allowance": "5"}, format="json"
    )

    events = trail(world.subscription)
    assert [action for _, action, _, _ in events] == [
        "limit.set",
        "api_key.created",
        "api_key.revoked",
        "limit_settings.changed",
    ]
    key_created = events[1][3]
    assert key_created["prefix"] == [None, created["prefix"]]
    assert created["key"].split(".", 1)[1] not in str(events)  # never the secret
    assert events[3][3] == {
        "limit_mode": ["hard", "soft"],
        "excess_allowance": ["0.0000", "5.0000"],
    }
    assert {actor for actor, *_ in events} == {"alice@acme.example"}


def test_admin_changes_to_limits_and_settings_are_audited_with_before_and_after(world, client):
    limit = CreditLimit.objects.create(
        subscription=world.subscription, user=world.member, credits=Decimal("100")
    )
    client.force_login(world.admin)

    client.post(
        f"/admin/credits/creditlimit/{limit.pk}/change/",
        {"subscription": world.subscription.pk, "user": world.member.pk, "credits": "75"},
    )
    client.post(
        f"/admin/accounts/subscription/{world.subscription.pk}/change/",
        {"limit_mode": "soft", "excess_allowance": "12"},
    )
    client.post(f"/admin/credits/creditlimit/{limit.pk}/delete/", {"post": "yes"})

    assert trail(world.subscription) == [
        (
            "alice@acme.example",
            "admin.changed",
            "credits.creditlimit",
            {"credits": ["100.0000", "75"]},
        ),
        (
            "alice@acme.example",
            "admin.changed",
            "accounts.subscription",
            {"limit_mode": ["hard", "soft"], "excess_allowance": ["0.0000", "12"]},
        ),
        (
            "alice@acme.example",
            "admin.deleted",
            "credits.creditlimit",
            {
                "subscription": ["Acme", None],
                "user": ["carol@acme.example", None],
                "credits": ["75.0000", None],
            },
        ),
    ]


def test_admin_changes_to_roles_are_audited(world, client):
    client.force_login(world.admin)
    membership = Membership.objects.get(user=world.member)

    client.post(
        f"/admin/accounts/membership/{membership.pk}/change/",
        {"role": Role.PROJECT_MANAGER, "environment": world.environment.pk},
    )
    client.post(
        "/admin/accounts/user/add/",
        {
            "email": "dan@acme.example",
            "display_name": "Dan",
            "password1": "a-long-unusual-password-42",
            "password2": "a-long-unusual-password-42",
            "usable_password": "true",
            "subscription": world.subscription.pk,
            "role": Role.MEMBER,
            "environment": world.environment.pk,
        },
    )
    client.post(f"/admin/accounts/membership/{membership.pk}/delete/", {"post": "yes"})

    events = trail(world.subscription)
    assert [(action, kind) for _, action, kind, _ in events] == [
        ("admin.changed", "accounts.membership"),
        ("admin.added", "accounts.user"),
        ("admin.deleted", "accounts.membership"),
    ]
    assert events[0][3] == {"role": ["member", "project_manager"]}
    added = events[1][3]
    assert added["email"] == [None, "dan@acme.example"]
    assert "Member of Website / Production" in added["roles"][1]
    assert "password" not in added


def test_admin_key_creation_and_revocation_are_audited_once(world, client):
    client.force_login(world.admin)
    client.post(
        "/admin/accounts/apikey/add/", {"name": "Admin made", "subscription": world.subscription.pk}
    )
    api_key = world.subscription.api_keys.get(name="Admin made")
    client.post("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]})

    assert [action for _, action, _, _ in trail(world.subscription)] == [
        "api_key.created",
        "api_key.revoked",
    ]
    assert AuditEvent.objects.get(action="api_key.created").object_id == api_key.prefix


def test_schedules_are_audited_like_every_scoped_admin(world, client):
    """The trail is part of ``ScopedAdminMixin``: every tenant model admin records its changes,
    report schedules included."""
    from accounts.admin_scoping import ScopedAdminMixin
    from reports.models import ReportSchedule

    assert issubclass(ScopedAdminMixin, AuditedAdminMixin)
    assert isinstance(admin.site.get_model_admin(ReportSchedule), ScopedAdminMixin)
    schedule = ReportSchedule.objects.create(
        subscription=world.subscription,
        created_by=world.admin,
        name="Weekly usage",
        recipients=["boss@acme.example"],
    )
    client.force_login(world.admin)

    client.post(f"/admin/reports/reportschedule/{schedule.pk}/delete/", {"post": "yes"})

    ((actor, action, kind, changes),) = trail(world.subscription)
    assert (actor, action, kind) == (
        "alice@acme.example",
        "admin.deleted",
        "reports.reportschedule",
    )
    assert changes["name"] == ["Weekly usage", None]


def test_schedule_changes_over_the_api_are_audited(world, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    client = api(world.admin)
    url = "/api/v1/report-schedules/"

    created = client.post(
        url, {"name": "Finance weekly", "recipients": ["cfo@acme.example"]}, format="json"
    )
    schedule_url = f"{url}{created.json()['id']}/"
    assert client.patch(schedule_url, {"send_time": "06:30"}, format="json").status_code == 200
    assert client.patch(schedule_url, {"send_time": "06:30"}, format="json").status_code == 200
    assert client.delete(schedule_url).status_code == 204

    events = trail(world.subscription)
    assert [(actor, action, kind) for actor, action, kind, _ in events] == [
        ("alice@acme.example", "schedule.created", "reports.reportschedule"),
        ("alice@acme.example", "schedule.changed", "reports.reportschedule"),
        ("alice@acme.example", "schedule.deleted", "reports.reportschedule"),
    ]
    created_changes, changed, deleted = (changes for *_, changes in events)
    assert created_changes["name"] == [None, "Finance weekly"]
    assert changed == {"send_time": ["08:00:00", "06:30:00"]}
    assert deleted["name"] == ["Finance weekly", None]
    assert trail(world.other_subscription) == []


def test_admins_read_their_own_trail_and_nobody_else_does(world, client):
    api(world.admin).put(
        f"/api/v1/limits/users/{world.member.pk}/", {"credits": "1"}, format="json"
    )
    ours = AuditEvent.objects.get()
    api(world.outsider).patch("/api/v1/subscription/", {"limit_mode": "soft"}, format="json")
    theirs = AuditEvent.objects.exclude(pk=ours.pk).get()
    assert theirs.subscription == world.other_subscription

    client.force_login(world.admin)
    listing = client.get("/admin/accounts/auditevent/")
    assert list(listing.context["cl"].result_list) == [ours]
    assert client.get(f"/admin/accounts/auditevent/{ours.pk}/change/").status_code == 200
    assert client.get(f"/admin/accounts/auditevent/{theirs.pk}/change/").status_code == 302

    client.force_login(world.outsider)
    assert list(client.get("/admin/accounts/auditevent/").context["cl"].result_list) == [theirs]
    assert client.get(f"/admin/accounts/auditevent/{ours.pk}/change/").status_code == 302

    for person in (world.manager, world.member):
        client.force_login(person)
        assert client.get("/admin/accounts/auditevent/").status_code == 302  # no admin at all
    assert list(AuditEvent.objects.visible_to(world.member)) == []


def test_the_trail_is_read_only_even_for_its_admins(world, client):
    api(world.admin).put(
        f"/api/v1/limits/users/{world.member.pk}/", {"credits": "1"}, format="json"
    )
    event = AuditEvent.objects.get()
    client.force_login(world.admin)

    assert client.get("/admin/accounts/auditevent/add/").status_code == 403
    client.post(f"/admin/accounts/auditevent/{event.pk}/change/", {"action": "forged"})
    assert (
        client.post(f"/admin/accounts/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    event.refresh_from_db()
    assert event.action == "limit.set"
