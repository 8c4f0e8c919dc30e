"""Shared personas, as healthchecks does: two subscriptions and every role in the first.

* ``admin``: subscription admin of ``subscription``
* ``manager``: project manager of ``environment`` (and a plain member of ``other_environment``)
* ``member``: member of ``environment``
* ``outsider``: subscription admin of ``other_subscription``
"""

from dataclasses import dataclass
from uuid import uuid4

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


def fresh_cache_keys(settings) -> None:
    """Count in the cache under a new key prefix: as if it were empty, without flushing it."""
    from axes.handlers.proxy import AxesProxyHandler

    redis = {"django.core.cache.backends.redis.RedisCache": "tests.cache.ScopedRedisCache"}
    settings.CACHES = {
        name: {
            **config,
            "BACKEND": redis.get(config["BACKEND"], config["BACKEND"]),
            "KEY_PREFIX": f"test-{uuid4().hex}",
        }
        for name, config in settings.CACHES.items()
    }
    AxesProxyHandler.get_implementation(force=True)  # it holds a cache client


@pytest.fixture(autouse=True)
def own_cache_keys(settings):
    """Each test counts throttles and login failures under a key prefix of its own in the
    shared (Redis) cache: tests, parallel workers and other checkouts never see each other's
    counts, and nothing needs flushing (a flush would also empty a broker in the same DB)."""
    fresh_cache_keys(settings)


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
