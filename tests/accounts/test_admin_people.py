"""People in the admin: adding members, their roles (which decide admin access) and teams."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from accounts.models import Membership, Role, Team, User
from accounts.services import SUBSCRIPTION_ADMINS_GROUP
from tests import factories
from tests.admin_pages import admin_url

pytestmark = pytest.mark.django_db


def has_admin_access(user: User) -> bool:
    user.refresh_from_db()
    return user.is_staff and user.groups.filter(name=SUBSCRIPTION_ADMINS_GROUP).exists()


# --- Users ----------------------------------------------------------------------------------


def new_member(world, **overrides) -> dict:
    return {
        "email": "dave@acme.example",
        "display_name": "Dave",
        "password1": "a long and unusual passphrase",
        "password2": "a long and unusual passphrase",
        "subscription": world.subscription.pk,
        "role": Role.MEMBER,
        "environment": world.environment.pk,
        **overrides,
    }


def test_admin_adds_a_member_by_email_and_password(client, world):
    client.force_login(world.admin)

    response = client.post(reverse("admin:accounts_user_add"), new_member(world))

    dave = User.objects.get(email="dave@acme.example")
    assert response.status_code == 302
    assert response.url == admin_url(dave, "change")
    assert dave.check_password("a long and unusual passphrase")
    assert dave.memberships.get().environment == world.environment
    assert not has_admin_access(dave)


def test_a_member_added_as_subscription_admin_gets_the_admin(client, world):
    client.force_login(world.admin)

    client.post(
        reverse("admin:accounts_user_add"),
        new_member(world, role=Role.SUBSCRIPTION_ADMIN, environment=""),
    )

    assert has_admin_access(User.objects.get(email="dave@acme.example"))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"environment": ""}, "environment"),
        ({"email": "CAROL@acme.example"}, "email"),
        ({"password2": "something else entirely"}, "password2"),
    ],
)
def test_adding_a_member_reports_mistakes_on_the_form(client, world, overrides, field):
    client.force_login(world.admin)

    response = client.post(reverse("admin:accounts_user_add"), new_member(world, **overrides))

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not User.objects.filter(email="dave@acme.example").exists()


def test_a_member_cannot_be_added_to_another_subscription(client, world):
    client.force_login(world.outsider)

    response = client.post(reverse("admin:accounts_user_add"), new_member(world))

    assert set(response.context["adminform"].form.errors) == {"subscription", "environment"}
    assert not User.objects.filter(email="dave@acme.example").exists()


def test_subscription_admins_never_see_platform_permissions(client, world):
    client.force_login(world.admin)

    response = client.post(
        admin_url(world.member, "change"),
        {
            "email": "carol@acme.example",
            "display_name": "Carol",
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
        },
    )

    assert response.status_code == 302
    world.member.refresh_from_db()
    assert world.member.display_name == "Carol"
    assert not world.member.is_staff
    assert not world.member.is_superuser
    fields = client.get(admin_url(world.member, "change")).context["adminform"].form.fields
    assert not {"is_staff", "is_superuser", "groups", "user_permissions"} & set(fields)


def test_platform_superusers_manage_platform_permissions(client, world):
    client.force_login(User.objects.create_superuser("root@creditdesk.example", "x"))

    fields = client.get(admin_url(world.member, "change")).context["adminform"].form.fields

    assert {"is_staff", "is_superuser", "groups", "user_permissions"} <= set(fields)


def test_someone_who_also_works_for_another_subscription_is_read_only(client, world):
    factories.membership(world.member, Role.MEMBER, environment=world.foreign_environment)
    client.force_login(world.admin)

    view = client.get(admin_url(world.member, "change"))
    change = client.post(admin_url(world.member, "change"), {"email": "mine@acme.example"})
    password = client.get(reverse("admin:auth_user_password_change", args=[world.member.pk]))

    assert view.status_code == 200
    assert world.member.password not in view.content.decode()
    assert change.status_code == 403
    assert password.status_code == 403
    world.member.refresh_from_db()
    assert world.member.email == "carol@acme.example"


def test_someone_with_platform_permissions_is_read_only(client, world):
    world.member.user_permissions.add(Permission.objects.get(codename="add_product"))
    client.force_login(world.admin)

    response = client.post(admin_url(world.member, "change"), {"email": "mine@acme.example"})

    assert response.status_code == 403


def test_admin_sets_a_password_for_their_own_member(client, world):
    client.force_login(world.admin)

    response = client.post(
        reverse("admin:auth_user_password_change", args=[world.member.pk]),
        {"password1": "another long passphrase", "password2": "another long passphrase"},
    )

    assert response.status_code == 302
    world.member.refresh_from_db()
    assert world.member.check_password("another long passphrase")


# --- Memberships: roles decide admin access ---------------------------------------------------


def test_granting_the_admin_role_gives_the_admin(client, world):
    client.force_login(world.admin)

    response = client.post(
        reverse("admin:accounts_membership_add"),
        {
            "user": world.member.pk,
            "subscription": world.subscription.pk,
            "role": Role.SUBSCRIPTION_ADMIN,
            "environment": "",
        },
    )

    assert response.status_code == 302
    assert has_admin_access(world.member)


def test_changing_the_role_away_from_admin_takes_the_admin(client, world):
    promoted = factories.membership(
        world.member, Role.SUBSCRIPTION_ADMIN, subscription=world.subscription
    )
    client.force_login(world.admin)

    client.post(
        admin_url(promoted, "change"),
        {"role": Role.PROJECT_MANAGER, "environment": world.other_environment.pk},
    )

    promoted.refresh_from_db()
    assert promoted.role == Role.PROJECT_MANAGER
    assert not has_admin_access(world.member)


def test_deleting_an_admin_role_takes_the_admin(client, world):
    promoted = factories.membership(
        world.member, Role.SUBSCRIPTION_ADMIN, subscription=world.subscription
    )
    client.force_login(world.admin)

    client.post(admin_url(promoted, "delete"), {"post": "yes"})

    assert not Membership.objects.filter(pk=promoted.pk).exists()
    assert not has_admin_access(world.member)


def test_deleting_admin_roles_in_bulk_takes_the_admin(client, world):
    promoted = factories.membership(
        world.member, Role.SUBSCRIPTION_ADMIN, subscription=world.subscription
    )
    client.force_login(world.admin)

    client.post(
        reverse("admin:accounts_membership_changelist"),
        {"action": "delete_selected", "_selected_action": [promoted.pk], "post": "yes"},
    )

    assert not Membership.objects.filter(pk=promoted.pk).exists()
    assert not has_admin_access(world.member)


def test_an_environment_of_another_subscription_is_a_form_error(client, world):
    """Alice administers both Acme and its sub-account, so both are offered; the model's own
    check refuses the mix on the form."""
    labs = factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)
    client.force_login(world.admin)

    response = client.post(
        reverse("admin:accounts_membership_add"),
        {
            "user": world.member.pk,
            "subscription": labs.pk,
            "role": Role.MEMBER,
            "environment": world.other_environment.pk,
        },
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["environment"] == [
        "This environment belongs to another subscription."
    ]


def test_the_only_subscription_is_preselected(client, world):
    client.force_login(world.admin)
    form = client.get(reverse("admin:accounts_membership_add")).context["adminform"].form
    assert form.initial["subscription"] == world.subscription.pk

    factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)
    form = client.get(reverse("admin:accounts_membership_add")).context["adminform"].form
    assert "subscription" not in form.initial


# --- Teams ----------------------------------------------------------------------------------


def team_form(world, *users, name="Writers", subscription=None) -> dict:
    data = {
        "name": name,
        "subscription": (subscription or world.subscription).pk,
        "team_memberships-TOTAL_FORMS": len(users),
        "team_memberships-INITIAL_FORMS": 0,
    }
    for index, user in enumerate(users):
        data[f"team_memberships-{index}-user"] = user.pk
    return data


def test_admin_creates_a_team_with_members(client, world):
    client.force_login(world.admin)

    response = client.post(
        reverse("admin:accounts_team_add"), team_form(world, world.member, world.manager)
    )

    assert response.status_code == 302
    team = Team.objects.get(name="Writers")
    assert set(team.members.all()) == {world.member, world.manager}


def test_a_person_is_in_one_team_per_subscription(client, world):
    factories.team_membership(world.member, factories.TeamFactory(subscription=world.subscription))
    client.force_login(world.admin)

    response = client.post(reverse("admin:accounts_team_add"), team_form(world, world.member))

    assert response.status_code == 200
    assert "carol@acme.example is already in the team" in response.content.decode()
    assert not Team.objects.filter(name="Writers").exists()


def test_team_members_must_work_in_the_teams_subscription(client, world):
    labs = factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)
    client.force_login(world.admin)

    response = client.post(
        reverse("admin:accounts_team_add"), team_form(world, world.member, subscription=labs)
    )

    assert response.status_code == 200
    assert "carol@acme.example has no role in this subscription." in response.content.decode()
