"""The one scoping layer: each role sees exactly what the product documents say."""

import pytest

from accounts.models import ApiKey, Environment, Membership, Project, Subscription, Team, User
from tests import factories

pytestmark = pytest.mark.django_db


def test_subscription_admin_sees_their_subscription_and_its_sub_accounts(world):
    sub_account = factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)

    visible = set(Subscription.objects.administered_by(world.admin))

    assert visible == {world.subscription, sub_account}


def test_admin_of_a_sub_account_does_not_see_the_parent(world):
    sub_account = factories.SubscriptionFactory(parent=world.subscription)
    sub_admin = factories.UserFactory()
    factories.membership(sub_admin, "subscription_admin", subscription=sub_account)

    assert list(Subscription.objects.administered_by(sub_admin)) == [sub_account]


def test_project_manager_and_member_administer_nothing(world):
    assert not Subscription.objects.administered_by(world.manager).exists()
    assert not Subscription.objects.administered_by(world.member).exists()


def test_environments_each_role_sees(world):
    everything_of_acme = {world.environment, world.other_environment}

    assert set(Environment.objects.visible_to(world.admin)) == everything_of_acme
    assert set(Environment.objects.visible_to(world.manager)) == everything_of_acme
    assert set(Environment.objects.managed_by(world.manager)) == {world.environment}
    assert set(Environment.objects.visible_to(world.member)) == {world.environment}
    assert not Environment.objects.managed_by(world.member).exists()
    assert set(Environment.objects.visible_to(world.outsider)) == {world.foreign_environment}


def test_projects_are_visible_to_who_works_in_them(world):
    assert list(Project.objects.visible_to(world.member)) == [world.environment.project]
    assert world.environment.project not in Project.objects.visible_to(world.outsider)


def test_memberships_and_users_visible_to_each_role(world):
    acme_people = {world.admin, world.manager, world.member}

    assert set(User.objects.visible_to(world.admin)) == acme_people
    assert set(User.objects.visible_to(world.manager)) == {world.manager, world.member}
    assert set(User.objects.visible_to(world.member)) == {world.member}
    assert set(User.objects.visible_to(world.outsider)) == {world.outsider}
    assert set(Membership.objects.visible_to(world.member)) == set(world.member.memberships.all())
    assert (
        not Membership.objects.visible_to(world.outsider)
        .filter(subscription=world.subscription)
        .exists()
    )


def test_teams_and_api_keys_belong_to_admins(world):
    team = factories.TeamFactory(subscription=world.subscription)
    factories.team_membership(world.member, team)
    key, _ = factories.api_key(world.subscription)

    assert list(Team.objects.visible_to(world.admin)) == [team]
    assert list(Team.objects.visible_to(world.member)) == [team]
    assert not Team.objects.visible_to(world.outsider).exists()
    assert list(ApiKey.objects.visible_to(world.admin)) == [key]
    assert not ApiKey.objects.visible_to(world.manager).exists()
    assert not ApiKey.objects.visible_to(world.outsider).exists()


def test_anonymous_sees_nothing_and_superusers_see_everything(world):
    from django.contrib.auth.models import AnonymousUser

    staff = User.objects.create_superuser("root@creditdesk.example", "x")

    assert not Environment.objects.visible_to(AnonymousUser()).exists()
    assert Environment.objects.visible_to(staff).count() == Environment.objects.count()


def test_one_user_can_hold_different_roles_in_different_environments(world):
    roles = dict(world.manager.memberships.values_list("environment__name", "role"))

    assert roles == {"Production": "project_manager", "Staging": "member"}


def test_email_login_is_case_insensitive_and_unique(db):
    from django.db import IntegrityError

    User.objects.create_user("Dana@Example.com", "pw")
    with pytest.raises(IntegrityError):
        User.objects.create_user("dana@example.com", "pw")
