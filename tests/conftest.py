"""Shared personas, as healthchecks does: two subscriptions and every role in the first.

* ``admin``: subscription admin of ``subscription``
* ``manager``: project manager of ``environment`` (and a plain member of ``other_environment``)
* ``member``: member of ``environment``
* ``outsider``: subscription admin of ``other_subscription``

The clock: ``CREDITDESK_PIN_CLOCK`` (e.g. ``2027-01-01T00:30 Europe/Prague`` or
``2028-02-29T12:00+01:00``) starts every test at that moment, the clock running on from there;
and tests marked ``date_sensitive`` also run at each of ``PINNED_MOMENTS`` in every run, so
that no outcome depends on the day the suite happens to run. A module-scoped fixture that
such tests use asks for ``pinned_clock``, so that it is made again at each moment (see
``seeded`` in tests/credits/test_seed_demo.py). Subprocesses keep the real clock.

Runs side by side: each run's test databases and broker keys carry a token of that run, so two
``bin/test`` runs against one PostgreSQL and one Redis do not meet.
"""

import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
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


def run_token(config) -> str:
    """Eight hex digits naming this run; every xdist worker of one run gets the same."""
    if not hasattr(config, "creditdesk_run_token"):
        workerinput = getattr(config, "workerinput", None)
        run = workerinput["testrunuid"] if workerinput else uuid.uuid4().hex
        config.creditdesk_run_token = run[:8]
    return config.creditdesk_run_token


@pytest.fixture(scope="session")
def django_db_modify_db_settings(request, django_db_modify_db_settings_parallel_suffix):
    """Test databases named for this run (``test_creditdesk_gw0_1a2b3c4d``), so that two runs
    against one server do not drop each other's; pytest-django drops them at the end. With
    ``--reuse-db`` the names stay fixed, so the next run can reuse them."""
    if request.config.getvalue("reuse_db"):
        return
    from django.conf import settings

    token = run_token(request.config)
    for database in settings.DATABASES.values():
        test = database.setdefault("TEST", {})
        test["NAME"] = f"{test.get('NAME') or 'test_' + database['NAME']}_{token}"


@pytest.fixture(scope="session", autouse=True)
def broker_keys_of_this_run(request):
    """Queues of this run only: a real worker started by one run must not take (and run
    against its own database) the tasks another run sent to the same Redis database."""
    from config.celery import app

    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    prefix = f"creditdesk-test-{run_token(request.config)}-{worker}:"
    # In place: this dict is settings.CELERY_BROKER_TRANSPORT_OPTIONS, which the app reads.
    options = app.conf.broker_transport_options
    options["global_keyprefix"] = prefix
    yield prefix
    options.pop("global_keyprefix", None)
    if app.conf.broker_url.startswith("redis"):
        import redis

        try:
            broker = redis.Redis.from_url(app.conf.broker_url, socket_connect_timeout=2)
            keys = list(broker.scan_iter(match=f"{prefix}*"))
            if keys:
                broker.delete(*keys)
        except redis.RedisError:
            pass  # the tests that needed the broker have said so already


PIN_CLOCK_VARIABLE = "CREDITDESK_PIN_CLOCK"

# The edges of the calendar a test written on an ordinary day misses: a month's (and a year's)
# first half hour in Prague, while UTC is still in the old year; the 3rd of a month, when
# "the last 7 days" reach back before the billing period; a leap day; New Year's Eve in New
# York, already the 1st in UTC and in Prague; both of Prague's daylight saving changes.
PINNED_MOMENTS = (
    "2027-01-01T00:30 Europe/Prague",
    "2027-03-03T09:00 Europe/Prague",
    "2028-02-29T12:00 Europe/Prague",
    "2026-12-31T23:30 America/New_York",
    "2026-10-25T02:30 Europe/Prague",  # the first 02:30 (summer time), before clocks go back
    "2027-03-28T03:30 Europe/Prague",  # an hour after the clocks went forward
)


def parse_moment(text: str) -> datetime:
    """``2027-01-01T00:30 Europe/Prague`` (a wall time and a zone) or ISO 8601 with an offset."""
    wall_time, _, zone = text.strip().partition(" ")
    moment = datetime.fromisoformat(wall_time)
    if zone:
        return moment.replace(tzinfo=ZoneInfo(zone))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} needs an offset or a time zone, e.g. {PINNED_MOMENTS[0]!r}")
    return moment


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "date_sensitive: also run with the clock pinned at each of tests.conftest.PINNED_MOMENTS",
    )


def pytest_generate_tests(metafunc):
    if os.environ.get(PIN_CLOCK_VARIABLE) or not metafunc.definition.get_closest_marker(
        "date_sensitive"
    ):
        return
    metafunc.parametrize(
        "pinned_clock",
        [None, *PINNED_MOMENTS],
        indirect=True,
        scope="module",
        ids=["today", *(moment.replace(" ", "_") for moment in PINNED_MOMENTS)],
    )


def pytest_collection_modifyitems(config, items):
    if not os.environ.get(PIN_CLOCK_VARIABLE):
        return
    # The live server runs in this process and keeps the pinned time; Chromium keeps the real
    # one, to which a session cookie set at a pinned past moment has already expired.
    skip = pytest.mark.skip(reason=f"{PIN_CLOCK_VARIABLE} does not reach Chromium's clock")
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def clock_pinned_for_the_run():
    """``CREDITDESK_PIN_CLOCK`` starts the whole run (fixtures of every scope included) at
    that moment; the clock ticks on from there, so timeouts and ordering behave as usual."""
    moment = os.environ.get(PIN_CLOCK_VARIABLE)
    if not moment:
        yield None
        return
    with time_machine.travel(parse_moment(moment), tick=True):
        yield parse_moment(moment)


@pytest.fixture(scope="module", autouse=True)
def pinned_clock(request, clock_pinned_for_the_run):
    """Where a ``date_sensitive`` module starts: its parameter (a moment, or ``None`` for the
    real clock), else the run's pinned moment. Module scope, so that a module's own fixtures
    (seeded data) are made at that moment too; a test that travels itself still does."""
    moment = getattr(request, "param", None)
    if not moment:
        yield clock_pinned_for_the_run
        return
    with time_machine.travel(parse_moment(moment), tick=True):
        yield parse_moment(moment)


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
            "KEY_PREFIX": f"test-{uuid.uuid4().hex}",
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


@pytest.fixture
def product(world):
    """The AI agent product, enabled for both subscriptions."""
    product = factories.ProductFactory(slug="ai-agent", name="AI agent")
    product.enabled_for.add(world.subscription, world.other_subscription)
    return product


@pytest.fixture
def eager_celery(settings):
    """Tasks run in line, and their errors fail the test (for ``usefixtures``)."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.CELERY_TASK_EAGER_PROPAGATES = True


@pytest.fixture
def site_url(settings):
    """The product's public address, as the links in emails give it (for ``usefixtures``)."""
    settings.SITE_URL = "https://creditdesk.example"
