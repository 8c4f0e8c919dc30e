"""The one scoping layer: each role sees exactly what the product documents say."""

import pytest
from rest_framework.test import APIClient

from accounts.authentication import KeyPrincipal
from accounts.models import ApiKey, Environment, Membership, Project, Subscription, Team, User
from accounts.services import revoke_api_key
from credits.models import CreditEvent, DailyUsage, PersonRollup, ProductRollup
from tests import factories
from tests.factories import utc
from tests.reports.recorder import EventRecorder

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


# --- API keys: their subscription, narrowed to their environment when they have one ----------


@pytest.fixture
def ledger(world):
    """carol in Production, alice in Staging, and the key alone in Staging, each recorded
    through the API by a key of the whole subscription."""
    recorder = EventRecorder(world)
    staging = str(world.other_environment.public_id)
    recorder.record(at=utc(2026, 11, 10, 9))
    recorder.record(at=utc(2026, 11, 11, 9), user=world.admin.email, environment=staging)
    recorder.record(at=utc(2026, 11, 12, 9), user=None, environment=staging)
    return recorder


def balance_as(secret: str, **params):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return client.get("/api/v1/balance/", params)


def test_a_key_sees_its_subscription_and_nothing_of_another(world, ledger):
    key, _ = factories.api_key(world.subscription, name="Reporting")
    foreign_key, _ = factories.api_key(world.other_subscription)
    acme = {world.admin, world.manager, world.member}

    assert list(Subscription.objects.visible_to(key)) == [world.subscription]
    assert set(Environment.objects.visible_to(key)) == {world.environment, world.other_environment}
    assert set(User.objects.visible_to(key)) == acme
    assert CreditEvent.objects.visible_to(key).count() == 3
    assert list(ApiKey.objects.visible_to(key)) == [key]
    assert list(Subscription.objects.visible_to(foreign_key)) == [world.other_subscription]
    for model in (Project, Environment, Membership, Team, CreditEvent, DailyUsage, PersonRollup):
        rows = model.objects.visible_to(foreign_key)
        assert not rows.filter(**{_subscription_of(model): world.subscription}).exists()
    assert not User.objects.visible_to(foreign_key).filter(pk__in=[u.pk for u in acme]).exists()
    assert not ProductRollup.objects.visible_to(foreign_key).exists()


def _subscription_of(model) -> str:
    return model.objects.none().subscription_lookup


def test_a_key_of_one_environment_sees_only_that_environment(world, ledger):
    key, _ = factories.api_key(world.subscription, environment=world.environment)

    assert list(Environment.objects.visible_to(key)) == [world.environment]
    assert list(Project.objects.visible_to(key)) == [world.environment.project]
    assert set(User.objects.visible_to(key)) == {world.admin, world.manager, world.member}
    assert set(CreditEvent.objects.visible_to(key).values_list("environment", flat=True)) == {
        world.environment.pk
    }
    assert {row.environment for row in PersonRollup.objects.visible_to(key)} == {world.environment}
    # The subscription-wide rollups cannot be narrowed to an environment: none of them.
    assert not ProductRollup.objects.visible_to(key).exists()
    whole_subscription, _ = factories.api_key(world.subscription, name="Whole")
    assert ProductRollup.objects.visible_to(KeyPrincipal(whole_subscription)).exists()


def test_a_key_of_one_environment_reads_no_other_environment_or_person(world, ledger):
    factories.membership(
        factories.UserFactory(email="dan@acme.example"),
        "member",
        environment=world.other_environment,
    )
    _, secret = factories.api_key(world.subscription, environment=world.environment)

    own = balance_as(
        secret, environment=str(world.environment.public_id), user="carol@acme.example"
    )
    other = balance_as(secret, environment=str(world.other_environment.public_id))
    elsewhere = balance_as(secret, user="dan@acme.example")

    assert own.status_code == 200, own.json()
    assert (other.status_code, other.json()["error"]["code"]) == (404, "unknown_environment")
    assert elsewhere.status_code == 404


def test_a_key_of_another_subscription_reads_nothing_here(world, ledger):
    _, secret = factories.api_key(world.other_subscription)

    response = balance_as(secret, subscription=str(world.subscription.pk))
    foreign_environment = balance_as(secret, environment=str(world.environment.public_id))

    assert response.status_code == 404
    assert foreign_environment.status_code == 404


def test_a_revoked_key_sees_nothing_and_administers_nothing(world):
    key, _ = factories.api_key(world.subscription)
    revoke_api_key(api_key=key, actor=world.admin)
    key.refresh_from_db()

    assert not Environment.objects.visible_to(key).exists()
    assert not Subscription.objects.administered_by(KeyPrincipal(key)).exists()
