"""factory-boy factories for the domain. Tests build what they need through these."""

from datetime import UTC, datetime
from decimal import Decimal

import factory
import pytest
import time_machine
from factory.django import DjangoModelFactory
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import (
    Environment,
    Membership,
    Project,
    Role,
    Subscription,
    Team,
    TeamMembership,
    User,
)
from accounts.services import add_membership, create_api_key
from credits.grants import add_grant
from credits.models import Agent, AlertRule, PlanPrice, Product, SubscriptionPrice
from credits.recording import record_adjustment

PASSWORD = "correct horse battery staple"


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    display_name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @classmethod
    def _after_postgeneration(cls, instance, create, results=None):
        if create:
            instance.save()


class SubscriptionFactory(DjangoModelFactory):
    class Meta:
        model = Subscription

    name = factory.Sequence(lambda n: f"Subscription {n}")
    plan = Subscription.Plan.PRO
    timezone = "Europe/Prague"
    base_allocation = Decimal("1000")


class ProjectFactory(DjangoModelFactory):
    class Meta:
        model = Project

    subscription = factory.SubFactory(SubscriptionFactory)
    name = factory.Sequence(lambda n: f"Project {n}")


class EnvironmentFactory(DjangoModelFactory):
    class Meta:
        model = Environment

    project = factory.SubFactory(ProjectFactory)
    name = factory.Iterator(["Production", "Staging", "Development"])


class TeamFactory(DjangoModelFactory):
    class Meta:
        model = Team

    subscription = factory.SubFactory(SubscriptionFactory)
    name = factory.Sequence(lambda n: f"Team {n}")


class ProductFactory(DjangoModelFactory):
    class Meta:
        model = Product
        django_get_or_create = ["slug"]

    slug = factory.Sequence(lambda n: f"product-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())


class AgentFactory(DjangoModelFactory):
    class Meta:
        model = Agent

    subscription = factory.SubFactory(SubscriptionFactory)
    name = factory.Sequence(lambda n: f"agent-{n}")
    agent_type = "single_task"
    model = "gpt-5-mini"


class AlertRuleFactory(DjangoModelFactory):
    """An admin's rule at 50% of the allocation."""

    class Meta:
        model = AlertRule

    subscription = factory.SubFactory(SubscriptionFactory)
    name = factory.Sequence(lambda n: f"Alert {n}")
    target = AlertRule.Target.ALLOCATION
    thresholds = factory.LazyFunction(lambda: [Decimal(50)])


class EnvironmentAlertRuleFactory(DjangoModelFactory):
    """A project manager's rule (pass ``owner``) on an environment: it emails its owner."""

    class Meta:
        model = AlertRule

    environment = factory.SubFactory(EnvironmentFactory)
    subscription = factory.SelfAttribute("environment.project.subscription")
    name = factory.Sequence(lambda n: f"Environment alert {n}")
    target = AlertRule.Target.ENVIRONMENT
    thresholds = factory.LazyFunction(lambda: [Decimal(50)])
    email_admins = False
    owner = None
    email_addresses = factory.LazyAttribute(lambda rule: [rule.owner.email] if rule.owner else [])


def membership(user: User, role: str, *, subscription=None, environment=None) -> Membership:
    """Give ``user`` a role through the service, as the product does."""
    subscription = subscription or environment.project.subscription
    return add_membership(user=user, subscription=subscription, role=role, environment=environment)


def team_membership(user: User, team: Team) -> TeamMembership:
    return TeamMembership.objects.create(user=user, team=team)


def api_key(subscription: Subscription, *, name: str = "Backend", environment=None):
    """Return ``(ApiKey, secret)``."""
    return create_api_key(subscription=subscription, name=name, environment=environment)


def adjustment(world, credits: str, reason: str, **where):
    """An adjustment of ``credits`` by the world's admin in its subscription, through the
    service; ``where`` names the environment, person or timestamp it is for."""
    return record_adjustment(
        subscription=world.subscription,
        credits=Decimal(credits),
        reason=reason,
        created_by=world.admin,
        **where,
    )


def invalid_fields(response) -> dict:
    """The details of a 400 ``validation_error``: the refused fields and why."""
    assert response.status_code == 400, (response.status_code, response.content[:300])
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    return error["details"]


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def api_key_client(secret: str) -> APIClient:
    """An API client that calls as the API key ``secret`` opens."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return client


def token_client(user) -> APIClient:
    """An API client signed in with ``user``'s API token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def frozen_at(moment: datetime):
    """An autouse fixture that stops the clock at ``moment`` for every test of a module
    (``frozen_now = frozen_at(NOW)``); it yields the traveller, for a test that must let the
    clock run for a while."""

    @pytest.fixture(autouse=True)
    def frozen_now():
        clock = time_machine.travel(moment, tick=False)
        clock.start()
        yield clock
        clock.stop()

    return frozen_now


__all__ = ["PASSWORD", "Role", "utc"]


def plan_price(plan: str, *, credit_price: str, excess_price: str, effective_from, currency="EUR"):
    """A plan's price from ``effective_from`` (a past moment too: tests build history that
    the service, which refuses backdating, would not let them)."""
    return PlanPrice.objects.create(
        plan=plan,
        currency=currency,
        credit_price=Decimal(credit_price),
        excess_price=Decimal(excess_price),
        effective_from=effective_from,
    )


def subscription_price(
    subscription, *, credit_price: str, excess_price: str, effective_from, currency="EUR"
):
    """A subscription's own price, like ``plan_price``."""
    return SubscriptionPrice.objects.create(
        subscription=subscription,
        currency=currency,
        credit_price=Decimal(credit_price),
        excess_price=Decimal(excess_price),
        effective_from=effective_from,
    )


def grant(subscription, credits: str, *, kind="bonus", reason="Welcome", **fields):
    """A grant through the service (checked and audited as any other)."""
    return add_grant(
        subscription=subscription,
        kind=kind,
        credits=Decimal(credits),
        reason=reason,
        created_by=None,
        **fields,
    )
