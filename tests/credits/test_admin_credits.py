"""Limits, agents and the product catalogue in the admin."""

from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import User
from credits.models import Agent, BillingPeriod, CreditEvent, CreditLimit, Product
from tests import factories
from tests.admin_pages import admin_url, post_add_form

pytestmark = pytest.mark.django_db


def autocomplete(client, model_name: str, field_name: str) -> set:
    response = client.get(
        reverse("admin:autocomplete"),
        {"app_label": "credits", "model_name": model_name, "field_name": field_name},
    )
    assert response.status_code == 200
    return {result["text"] for result in response.json()["results"]}


@pytest.fixture
def acme(world):
    """One object of each credits model in Acme, the subscription Alice administers."""
    period = BillingPeriod.objects.create(
        subscription=world.subscription,
        start=factories.utc(2025, 2, 28, 23),
        end=factories.utc(2025, 3, 31, 22),
    )
    agent = factories.AgentFactory(subscription=world.subscription)
    return {
        "agent": agent,
        "creditlimit": CreditLimit.objects.create(
            subscription=world.subscription, user=world.member, credits=Decimal("5")
        ),
        "billingperiod": period,
        "creditevent": CreditEvent.objects.create(
            subscription=world.subscription,
            period=period,
            timestamp=factories.utc(2025, 3, 14, 10),
            environment=world.environment,
            user=world.member,
            agent=agent,
            credits=Decimal("1.5"),
        ),
    }


@pytest.mark.parametrize("model", ["agent", "creditlimit", "billingperiod", "creditevent"])
def test_each_credits_admin_shows_acme_to_alice_only(client, world, acme, model):
    changelist = reverse(f"admin:credits_{model}_changelist")
    client.force_login(world.admin)
    assert acme[model] in client.get(changelist).context["cl"].result_list
    assert client.get(admin_url(acme[model], "change")).status_code == 200
    assert client.get(admin_url(acme[model], "history")).status_code == 200

    client.force_login(world.outsider)
    assert acme[model] not in client.get(changelist).context["cl"].result_list
    assert client.get(admin_url(acme[model], "change")).status_code == 302
    assert client.get(admin_url(acme[model], "history")).status_code == 302


# --- Credit limits --------------------------------------------------------------------------


@pytest.fixture
def teams(world):
    return {
        "acme": factories.TeamFactory(subscription=world.subscription, name="Writers"),
        "globex": factories.TeamFactory(subscription=world.other_subscription, name="Analysts"),
    }


def limit_form(world, *, user=None, team=None, subscription=None, credits="100") -> dict:
    return {
        "subscription": (subscription or world.subscription).pk,
        "user": user.pk if user else "",
        "team": team.pk if team else "",
        "credits": credits,
    }


def test_admin_sets_a_users_limit(client, world):
    client.force_login(world.admin)

    response = client.post(
        reverse("admin:credits_creditlimit_add"), limit_form(world, user=world.member)
    )

    assert response.status_code == 302
    limit = CreditLimit.objects.get()
    assert (limit.user, limit.credits) == (world.member, Decimal("100"))


def test_admin_sets_a_teams_limit(client, world, teams):
    client.force_login(world.admin)

    client.post(reverse("admin:credits_creditlimit_add"), limit_form(world, team=teams["acme"]))

    assert CreditLimit.objects.get().team == teams["acme"]


def test_limit_choices_are_the_users_own(client, world, teams):
    client.force_login(world.outsider)

    form = client.get(reverse("admin:credits_creditlimit_add")).context["adminform"].form

    assert list(form.fields["subscription"].queryset) == [world.other_subscription]
    assert list(form.fields["team"].queryset) == [teams["globex"]]
    assert list(form.fields["user"].queryset) == [world.outsider]
    assert autocomplete(client, "creditlimit", "user") == {"charlie@globex.example"}
    assert autocomplete(client, "creditlimit", "team") == {"Analysts"}


@pytest.mark.parametrize(
    ("case", "field", "error"),
    [
        ("both", "team", "Choose a user or a team, not both."),
        ("neither", "user", "Choose the user or the team this limit applies to."),
        ("team_elsewhere", "team", "This team belongs to another subscription."),
        ("user_elsewhere", "user", "This person has no role in this subscription."),
    ],
)
def test_limit_mistakes_are_form_errors(client, world, teams, case, field, error):
    labs = factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)
    data = {
        "both": limit_form(world, user=world.member, team=teams["acme"]),
        "neither": limit_form(world),
        "team_elsewhere": limit_form(world, team=teams["acme"], subscription=labs),
        "user_elsewhere": limit_form(world, user=world.member, subscription=labs),
    }[case]
    client.force_login(world.admin)

    response = client.post(reverse("admin:credits_creditlimit_add"), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field] == [error]
    assert not CreditLimit.objects.exists()


def test_another_subscriptions_limit_does_not_open(client, world):
    limit = CreditLimit.objects.create(
        subscription=world.subscription, user=world.member, credits=Decimal("5")
    )
    client.force_login(world.outsider)

    assert client.get(admin_url(limit, "change")).status_code == 302
    assert (
        client.get(reverse("admin:credits_creditlimit_changelist")).context["cl"].result_count == 0
    )


# --- Agents ---------------------------------------------------------------------------------


def test_admin_registers_an_agent_as_its_creator(client, world):
    response = post_add_form(
        client,
        world,
        "credits_agent",
        name="Release notes writer",
        agent_type="single_task",
        model="gpt-5-mini",
    )

    assert response.status_code == 302
    assert Agent.objects.get().created_by == world.admin


def test_agent_filters_and_autocomplete_offer_only_the_users_own(client, world):
    factories.AgentFactory(subscription=world.subscription, name="Acme bot", agent_type="acme_only")
    factories.AgentFactory(subscription=world.other_subscription, agent_type="globex_only")
    client.force_login(world.admin)

    content = client.get(reverse("admin:credits_agent_changelist")).content.decode()

    assert "acme_only" in content
    assert "globex_only" not in content
    client.force_login(world.outsider)
    assert "Acme bot" not in autocomplete(client, "creditevent", "agent")


# --- Products -------------------------------------------------------------------------------


@pytest.fixture
def product(world):
    product = factories.ProductFactory(slug="ai-agent", name="AI agent")
    product.enabled_for.set([world.subscription, world.other_subscription])
    return product


def test_subscription_admins_read_the_catalogue_without_who_uses_it(client, world, product):
    client.force_login(world.admin)

    response = client.get(admin_url(product, "change"))

    assert response.status_code == 200
    assert "Globex" not in response.content.decode()
    assert client.post(admin_url(product, "change"), {"name": "Mine"}).status_code == 403


def test_platform_superusers_enable_products(client, world, product):
    client.force_login(User.objects.create_superuser("root@creditdesk.example", "x"))

    response = client.post(
        admin_url(product, "change"),
        {"name": "AI agent", "slug": "ai-agent", "enabled_for": [world.subscription.pk]},
    )

    assert response.status_code == 302
    assert list(Product.objects.get().enabled_for.all()) == [world.subscription]
