"""A subscription's own settings in the admin: limit behaviour and API keys."""

from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.urls import reverse

from accounts.models import ApiKey, Subscription, User
from tests import factories
from tests.admin_pages import admin_url

pytestmark = pytest.mark.django_db


# --- Limit mode and allocation --------------------------------------------------------------

SETTINGS = {
    "name": "Acme Unlimited",
    "plan": Subscription.Plan.SCALE,
    "timezone": "UTC",
    "base_allocation": "999999",
    "limit_mode": Subscription.LimitMode.SOFT,
    "excess_allowance": "250",
}


def test_subscription_admin_changes_only_how_limits_behave(client, world):
    client.force_login(world.admin)

    response = client.post(admin_url(world.subscription, "change"), SETTINGS)

    assert response.status_code == 302
    subscription = Subscription.objects.get(pk=world.subscription.pk)
    assert subscription.limit_mode == Subscription.LimitMode.SOFT
    assert subscription.excess_allowance == Decimal("250")
    assert subscription.base_allocation == Decimal("1000")
    assert subscription.plan == Subscription.Plan.PRO
    assert subscription.name == "Acme"
    assert subscription.timezone == "Europe/Prague"


def test_the_subscription_form_has_no_allocation_field_for_subscription_admins(client, world):
    client.force_login(world.admin)

    response = client.get(admin_url(world.subscription, "change"))

    assert set(response.context["adminform"].form.fields) == {
        "limit_mode",
        "excess_allowance",
        "enabled_products",
    }
    assert "1000" in response.content.decode()  # shown, read-only


def test_platform_superusers_change_plan_and_allocation(client, world):
    client.force_login(User.objects.create_superuser("root@creditdesk.example", "x"))

    response = client.post(admin_url(world.subscription, "change"), SETTINGS)

    assert response.status_code == 302
    subscription = Subscription.objects.get(pk=world.subscription.pk)
    assert subscription.base_allocation == Decimal("999999")
    assert subscription.plan == Subscription.Plan.SCALE


def test_subscription_admins_do_not_add_subscriptions(client, world):
    client.force_login(world.admin)

    assert client.get(reverse("admin:accounts_subscription_add")).status_code == 403


def test_parent_admins_manage_sub_accounts_but_not_the_other_way_round(client, world):
    labs = factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)
    labs_admin = factories.UserFactory(email="lab@acme.example")
    factories.membership(labs_admin, "subscription_admin", subscription=labs)

    client.force_login(world.admin)
    assert client.get(admin_url(labs, "change")).status_code == 200
    client.force_login(labs_admin)
    assert client.get(admin_url(world.subscription, "change")).status_code == 302


# --- API keys -------------------------------------------------------------------------------


def create_key(client, world, **overrides):
    data = {"name": "Backend", "subscription": world.subscription.pk, "environment": ""}
    return client.post(reverse("admin:accounts_apikey_add"), data | overrides, follow=True)


def test_creating_a_key_shows_its_secret_once(client, world):
    client.force_login(world.admin)

    response = create_key(client, world)

    api_key = ApiKey.objects.get(name="Backend")
    [message] = [str(m) for m in response.context["messages"] if "secret" in str(m)]
    secret = message.split("<code>")[1].split("</code>")[0]
    assert ApiKey.objects.get_from_key(secret) == api_key
    assert api_key.created_by == world.admin
    assert secret not in client.get(admin_url(api_key, "change")).content.decode()
    assert secret not in client.get(reverse("admin:accounts_apikey_changelist")).content.decode()


def test_only_a_hash_of_the_secret_is_stored(client, world):
    client.force_login(world.admin)

    response = create_key(client, world)

    [message] = [str(m) for m in response.context["messages"] if "secret" in str(m)]
    secret = message.split("<code>")[1].split("</code>")[0]
    random_part = secret.partition(".")[2]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apikey")
        stored = str(cursor.fetchall())
    logged = str(list(LogEntry.objects.values()))
    assert random_part not in stored
    assert random_part not in logged


def test_the_key_list_shows_what_identifies_a_key(client, world):
    api_key, _ = factories.api_key(world.subscription, environment=world.environment)
    client.force_login(world.admin)

    response = client.get(reverse("admin:accounts_apikey_changelist"))

    content = response.content.decode()
    for column in ["Name", "Prefix", "Environment", "Created", "Last used at", "Revoked"]:
        assert column in content
    assert api_key.prefix in content
    assert "Website / Production" in content


def test_a_keys_environment_must_belong_to_its_subscription(client, world):
    labs = factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)
    client.force_login(world.admin)

    response = create_key(client, world, subscription=labs.pk, environment=world.environment.pk)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["environment"] == [
        "This environment belongs to another subscription."
    ]
    assert not ApiKey.objects.exists()


def test_revoking_keys_with_the_admin_action(client, world):
    api_key, secret = factories.api_key(world.subscription)
    client.force_login(world.admin)

    response = client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke", "_selected_action": [api_key.pk]},
        follow=True,
    )

    api_key.refresh_from_db()
    assert api_key.revoked
    assert api_key.revoked_at is not None
    assert "Revoked 1 API key." in response.content.decode()
    with pytest.raises(ApiKey.DoesNotExist):
        ApiKey.objects.get_from_key(secret)


def test_a_revoked_key_cannot_be_revived_in_its_form(client, world):
    api_key, _ = factories.api_key(world.subscription)
    client.force_login(world.admin)
    client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke", "_selected_action": [api_key.pk]},
    )

    client.post(admin_url(api_key, "change"), {"name": "Backend", "revoked": ""})

    api_key.refresh_from_db()
    assert api_key.revoked


def test_keys_are_never_deleted(client, world):
    api_key, _ = factories.api_key(world.subscription)
    client.force_login(User.objects.create_superuser("root@creditdesk.example", "x"))

    response = client.get(reverse("admin:accounts_apikey_changelist"))

    assert "delete_selected" not in response.content.decode()
    assert client.post(admin_url(api_key, "delete"), {"post": "yes"}).status_code == 403
    assert ApiKey.objects.filter(pk=api_key.pk).exists()
