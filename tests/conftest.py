"""Shared personas, as healthchecks does: two subscriptions and every role in the first.

* ``admin``: subscription admin of ``subscription``
* ``manager``: project manager of ``environment`` (and a plain member of ``other_environment``)
* ``member``: member of ``environment``
* ``outsider``: subscription admin of ``other_subscription``
"""

from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from accounts.models import Role
from tests import factories


@dataclass
class World:
    subscription: object
    environment: object
    other_environment: object
    admin: object
    manager: object
    member: object
    other_subscription: object
    foreign_environment: object
    outsider: object


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Real hashers are slow on purpose; tests only need passwords to round-trip."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def static_files_without_manifest(settings):
    """Pages link static files; tests run without collectstatic's manifest."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def world(db) -> World:
    subscription = factories.SubscriptionFactory(name="Acme")
    project = factories.ProjectFactory(subscription=subscription, name="Website")
    environment = factories.EnvironmentFactory(project=project, name="Production")
    other_environment = factories.EnvironmentFactory(project=project, name="Staging")
    admin = factories.UserFactory(email="alice@acme.example")
    manager = factories.UserFactory(email="bob@acme.example")
    member = factories.UserFactory(email="carol@acme.example")
    factories.membership(admin, Role.SUBSCRIPTION_ADMIN, subscription=subscription)
    factories.membership(manager, Role.PROJECT_MANAGER, environment=environment)
    factories.membership(manager, Role.MEMBER, environment=other_environment)
    factories.membership(member, Role.MEMBER, environment=environment)

    other_subscription = factories.SubscriptionFactory(name="Globex")
    foreign_environment = factories.EnvironmentFactory(
        project=factories.ProjectFactory(subscription=other_subscription, name="Intranet"),
        name="Production",
    )
    outsider = factories.UserFactory(email="charlie@globex.example")
    factories.membership(outsider, Role.SUBSCRIPTION_ADMIN, subscription=other_subscription)
    factories.membership(outsider, Role.MEMBER, environment=foreign_environment)
    return World(
        subscription=subscription,
        environment=environment,
        other_environment=other_environment,
        admin=admin,
        manager=manager,
        member=member,
        other_subscription=other_subscription,
        foreign_environment=foreign_environment,
        outsider=outsider,
    )


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()
