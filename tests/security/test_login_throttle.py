"""Brute force against the login forms: after a few wrong passwords per account or per client
address even the right one is refused until the lockout ends, and throttles count across
processes in the shared (Redis) cache."""

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings as django_settings
from django.test import Client

from tests import factories
from tests.database_url import child_database_url
from tests.factories import PASSWORD, utc

pytestmark = pytest.mark.django_db

LOGIN_FORMS = {"usage pages": "/login/", "admin": "/admin/login/"}
NOON = utc(2026, 11, 23, 12)


def log_in(path: str, email: str, password: str, address: str = "203.0.113.7"):
    client = Client(REMOTE_ADDR=address)
    response = client.post(path, {"username": email, "password": password})
    return response, client


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture
def staff(world):
    return factories.UserFactory(email="ops@acme.example", is_staff=True, is_superuser=True)


@pytest.fixture
def per_process_cache(settings):
    """A cache whose expiry follows the (travelled) clock; Redis keeps real time."""
    from axes.handlers.proxy import AxesProxyHandler

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    AxesProxyHandler.get_implementation(force=True)


@pytest.mark.parametrize("form", LOGIN_FORMS)
def test_after_a_few_wrong_passwords_even_the_right_one_is_refused_until_the_lockout_ends(
    staff, form, per_process_cache
):
    path = LOGIN_FORMS[form]
    limit = django_settings.AXES_FAILURE_LIMIT
    with time_machine.travel(NOON, tick=False):
        statuses = [log_in(path, staff.email, "wrong")[0].status_code for _ in range(limit)]
        assert statuses == [200] * (limit - 1) + [429]  # the last failure locks

        refused, client = log_in(path, staff.email.upper(), PASSWORD)
        assert refused.status_code == 429
        assert not signed_in(client)
        page = refused.content.decode()
        assert "Too many failed logins" in page
        assert f"After {limit} wrong passwords" in page
        assert "paused for 15 minutes, even with the right" in page
        assert refused["Retry-After"] == str(15 * 60)

    with time_machine.travel(NOON + timedelta(minutes=14, seconds=59), tick=False):
        assert log_in(path, staff.email, PASSWORD)[0].status_code == 429

    with time_machine.travel(NOON + timedelta(minutes=15, seconds=1), tick=False):
        response, client = log_in(path, staff.email, PASSWORD)
        assert response.status_code == 302
        assert signed_in(client)  # read on the same clock: the session lasts two weeks from NOON


def test_a_success_before_the_limit_starts_the_count_again(staff):
    limit = django_settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        log_in("/login/", staff.email, "wrong")
    assert log_in("/login/", staff.email, PASSWORD)[0].status_code == 302
    for _ in range(limit - 1):
        assert log_in("/login/", staff.email, "wrong")[0].status_code == 200


def test_one_address_guessing_many_accounts_is_locked_out(world, staff):
    limit = django_settings.AXES_FAILURE_LIMIT
    for n in range(limit):
        log_in("/login/", f"guess{n}@acme.example", "wrong", address="198.51.100.9")

    assert log_in("/login/", staff.email, PASSWORD, address="198.51.100.9")[0].status_code == 429
    assert log_in("/admin/login/", staff.email, PASSWORD, "198.51.100.9")[0].status_code == 429
    response, client = log_in("/login/", staff.email, PASSWORD, address="198.51.100.10")
    assert response.status_code == 302 and signed_in(client)


def test_one_account_guessed_from_many_addresses_is_locked_out(world, staff, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    limit = django_settings.AXES_FAILURE_LIMIT
    for n in range(limit):
        client = Client(HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
        client.post("/admin/login/", {"username": staff.email, "password": "wrong"})

    client = Client(HTTP_X_FORWARDED_FOR="192.0.2.200")
    response = client.post("/login/", {"username": staff.email, "password": PASSWORD})
    assert response.status_code == 429 and not signed_in(client)
    # Other people are not locked out by it.
    assert log_in("/login/", world.member.email, PASSWORD)[0].status_code == 302


def test_failures_are_counted_in_redis_and_expire_with_the_lockout(staff):
    """The counts are in the shared cache (Redis in tests, as in production), with the lockout's
    lifetime: any process sees them and they go away by themselves."""
    from django.core.cache import caches

    from tests.cache import ScopedRedisCache

    cache = caches["default"]
    assert isinstance(cache, ScopedRedisCache)
    for _ in range(2):
        log_in("/login/", staff.email, "wrong")
    client = cache._cache.get_client()
    keys = list(client.scan_iter(match=cache.make_key("*")))
    assert len(keys) == 2  # the account's and the address's count
    assert {int(client.get(key)) for key in keys} == {2}
    assert all(0 < client.ttl(key) <= 15 * 60 for key in keys)


# --- Across processes -------------------------------------------------------------------------

TOKEN_GUESSER = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from django.test import Client
client = Client(REMOTE_ADDR="203.0.113.50")
statuses = [
    client.post(
        "/api/v1/auth/token/",
        {"email": sys.argv[1], "password": "wrong"},
        content_type="application/json",
    ).status_code
    for _ in range(int(sys.argv[2]))
]
print(json.dumps(statuses))
"""


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # keeps migrated groups
def test_two_worker_processes_share_the_token_throttle_through_redis(world):
    """Two processes (as two gunicorn workers) ask for a token with wrong passwords: the second
    is throttled once both together reach the rate, not after its own ten."""
    rate = int(django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token"].split("/")[0])
    cache_url = os.environ.get("CACHE_URL", "rediscache://127.0.0.1:6379/2")
    prefix = f"test-processes-{os.getpid()}-{id(world)}"
    env = {
        **os.environ,
        "DATABASE_URL": child_database_url(),
        "CACHE_URL": f"{cache_url}{'&' if '?' in cache_url else '?'}key_prefix={prefix}",
        "DEBUG": "false",
        "LOG_LEVEL": "ERROR",
    }

    def worker(attempts: int) -> list[int]:
        done = subprocess.run(  # noqa: S603 - our own script and arguments
            [sys.executable, "-c", TOKEN_GUESSER, world.admin.email, str(attempts)],
            capture_output=True,
            text=True,
            env=env,
            cwd=django_settings.BASE_DIR,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = worker(rate - 3)
    second = worker(5)

    assert first == [400] * (rate - 3)
    assert second == [400, 400, 400, 429, 429]


@pytest.mark.parametrize("cache_url", ["locmemcache://", "dummycache://"])
def test_production_refuses_to_start_on_a_per_process_cache(cache_url):
    """``check`` (run by ``migrate``, the release step, and ``runserver``) and ``check --deploy``
    stop with a message naming the setting when DEBUG is off and the cache is per process."""
    env = {
        **{key: value for key, value in os.environ.items() if key not in ("DEBUG", "CACHE_URL")},
        "DEBUG": "false",
        "CACHE_URL": cache_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    for deploy in ([], ["--deploy"]):
        result = subprocess.run(  # noqa: S603 - our own interpreter and manage.py
            [sys.executable, "manage.py", "check", *deploy],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=django_settings.BASE_DIR,
        )
        assert result.returncode != 0
        assert "accounts.E001" in result.stderr
        assert "Set CACHE_URL to a shared cache" in result.stderr
