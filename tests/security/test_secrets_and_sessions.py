"""Secrets and sessions: API keys hashed at rest and shown once, revocation at once, the token
endpoint throttled, CSRF on every form and session-authenticated write, and production
settings that pass ``check --deploy`` and send secure cookies, HSTS and security headers."""

import json
import os
import re
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import quote
from django.test import Client, override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.audit import AuditEvent
from accounts.models import ApiKey, User
from credits.models import CreditEvent
from tests import factories
from tests.conftest import fresh_cache_keys
from tests.security.test_tenant_isolation import PATTERNS

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/api-keys/"


@pytest.fixture
def product(world):
    product = factories.ProductFactory(slug="ai-agent", name="AI agent")
    product.enabled_for.add(world.subscription)
    return product


def admin_api(world) -> APIClient:
    client = APIClient()
    client.force_authenticate(world.admin)
    return client


def record(client, world, key: str):
    return client.post(
        "/api/v1/events/",
        {
            "idempotency_key": key,
            "environment": str(world.environment.public_id),
            "product": "ai-agent",
            "credits": "1",
        },
        format="json",
    )


# --- API keys ---------------------------------------------------------------------------------


def test_an_api_key_is_shown_once_and_stored_only_as_a_hash(world, product, client):
    created = admin_api(world).post(KEYS, {"name": "Backend"}, format="json")

    assert created.status_code == 201
    assert created["Cache-Control"] == "no-store"
    secret = created.json()["key"]
    prefix = created.json()["prefix"]
    assert secret.startswith(prefix + ".") and len(secret) > 30

    # At rest: no column of any row holds the secret or its random part.
    stored = ApiKey.objects.get(prefix=prefix)
    hidden = secret.split(".", 1)[1]
    rows = [
        *ApiKey.objects.values_list(),
        *AuditEvent.objects.values_list(),
        *LogEntry.objects.values_list(),
    ]
    assert rows
    assert not any(hidden in str(value) for row in rows for value in row)
    assert stored.hashed_key != hidden and stored.is_valid(secret)

    # Never shown again: not in the list, not in the admin.
    listed = admin_api(world).get(KEYS)
    assert hidden not in listed.content.decode()
    assert "key" not in listed.json()["results"][0]
    client.force_login(world.admin)
    for path in ("/admin/accounts/apikey/", f"/admin/accounts/apikey/{stored.prefix}/change/"):
        assert hidden not in client.get(path).content.decode()


def test_the_admin_shows_a_new_keys_secret_once(world, client):
    client.force_login(world.admin)
    response = client.post(
        "/admin/accounts/apikey/add/",
        {"name": "From the admin", "subscription": world.subscription.pk},
        follow=True,
    )
    shown = re.findall(r"<code>([^<]+)</code>", response.content.decode())
    assert len(shown) == 1
    secret = shown[0]
    api_key = ApiKey.objects.get(name="From the admin")
    assert api_key.is_valid(secret)
    assert secret.split(".", 1)[1] not in client.get("/admin/accounts/apikey/").content.decode()


def test_no_admin_url_or_page_carries_a_keys_hash(world, product, client):
    """Admin URLs name a key by its public prefix: the stored hash is in no link, redirect,
    page or form of the admin (change list, change form, history, recent actions, the
    ledger's link to the key)."""
    client.force_login(world.admin)
    added = client.post(
        reverse("admin:accounts_apikey_add"),
        {"name": "From the admin", "subscription": world.subscription.pk},
        follow=True,
    )
    api_key = ApiKey.objects.get(name="From the admin")
    digest = api_key.hashed_key.rsplit("$", 1)[-1]
    assert len(digest) >= 32 and digest in api_key.pk
    (secret,) = re.findall(r"<code>([^<]+)</code>", added.content.decode())
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    assert record(machine, world, "with-the-key").status_code == 201
    event = CreditEvent.objects.get(idempotency_key="with-the-key")

    change = reverse("admin:accounts_apikey_change", args=[quote(api_key.pk)])
    assert change == f"/admin/accounts/apikey/{api_key.prefix}/change/"
    urls = [url for url, _ in added.redirect_chain]
    pages = {"add (followed)": added}
    for url in (
        "/admin/",
        reverse("admin:accounts_apikey_changelist"),
        change,
        reverse("admin:accounts_apikey_history", args=[quote(api_key.pk)]),
        reverse("admin:credits_creditevent_changelist"),
        reverse("admin:credits_creditevent_change", args=[quote(event.pk)]),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        pages[url] = response
        urls.append(url)
    assert not [url for url in urls if digest in url]
    assert not [name for name, page in pages.items() if digest in page.content.decode()]
    assert f'href="{change}"' in pages["/admin/"].content.decode()  # recent actions link
    assert (
        change
        in pages[
            reverse("admin:credits_creditevent_change", args=[quote(event.pk)])
        ].content.decode()
    )
    assert "Added." in pages[urls[-3]].content.decode()  # the history found the key's log

    # Actions select keys by prefix.
    client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke", "_selected_action": [api_key.prefix]},
    )
    api_key.refresh_from_db()
    assert api_key.revoked


@pytest.mark.parametrize("how", ["api", "admin action"])
def test_a_revoked_key_is_refused_at_once(world, product, client, how):
    api_key, secret = factories.api_key(world.subscription)
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    assert record(machine, world, "before").status_code == 201

    if how == "api":
        revoked = admin_api(world).post(f"{KEYS}{api_key.prefix}/revoke/")
        assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    else:
        client.force_login(world.admin)
        client.post(
            "/admin/accounts/apikey/",
            {"action": "revoke", "_selected_action": [api_key.pk]},
        )

    refused = record(machine, world, "after")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "authentication_failed"
    assert machine.get("/api/v1/balance/").status_code == 401


def test_a_key_cannot_manage_keys_or_read_reports(world, product):
    _, secret = factories.api_key(world.subscription)
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    for method, path in [
        ("post", KEYS),
        ("get", KEYS),
        ("get", "/api/v1/limits/"),
        ("patch", "/api/v1/subscription/"),
        ("get", "/api/v1/reports/usage-by-user/?timeframe=this_month"),
        ("get", "/api/v1/exports/credit-usage/?scope=mine"),
    ]:
        assert getattr(machine, method)(path, {}, format="json").status_code == 403, path


# --- The token endpoint -------------------------------------------------------------------------


def test_the_token_endpoint_is_throttled_per_address_and_per_email(world, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    rate = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token"].split("/")[0])
    client = APIClient()

    def guess(email, address):
        return client.post(
            "/api/v1/auth/token/",
            {"email": email, "password": "guess"},
            HTTP_X_FORWARDED_FOR=address,
        )

    statuses = [guess(f"user{n}@acme.example", "203.0.113.1").status_code for n in range(rate)]
    assert statuses == [400] * rate
    throttled = guess("another@acme.example", "203.0.113.1")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "throttled"
    assert throttled.json()["error"]["details"]["retry_after_seconds"] > 0

    # One person's password guessed from many addresses: throttled by email.
    fresh_cache_keys(settings)
    statuses = [guess(world.admin.email, f"198.51.100.{n}").status_code for n in range(rate + 1)]
    assert statuses[-1] == 429


# --- CSRF ---------------------------------------------------------------------------------------

# Views that take a POST without a CSRF token, and why that is safe.
CSRF_EXEMPT = {
    # Exchanges credentials for a token returned in the body; it uses no session and no cookie.
    "auth-token": "no session: credentials in, token out",
    # RFC 8058 one-click unsubscribe: mail clients POST without a page or a cookie; the signed
    # token in the URL is the whole authorisation, for one report to one address.
    "report-unsubscribe": "a signed token, not a session, authorises it",
}


def concrete(route: str) -> str:
    """A URL matching ``route``, with every parameter set to 1."""
    path = re.sub(r"<(?:\w+:)?\w+>", "1", route)
    path = re.sub(r"\(\?P<\w+>[^)]*\)", "1", path)
    path = path.replace("^", "").replace("$", "")
    if "(?P<app_label>" in route:
        path = "admin/accounts/"
    return "/" + path.lstrip("/")


@pytest.mark.parametrize("who", ["staff", "subscription admin", "member"])
def test_every_url_refuses_a_post_without_a_csrf_token(world, who):
    """Every form of the admin and the pages, and every API write made with a session."""
    user = {
        "staff": lambda: User.objects.create_superuser("root@platform.example", "x"),
        "subscription admin": lambda: world.admin,
        "member": lambda: world.member,
    }[who]()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    accepted = []
    for key, route in PATTERNS:
        if key in CSRF_EXEMPT:
            continue
        path = concrete(route)
        response = client.post(path, {"name": "x"})
        if response.status_code == 404 and "(?P<url>" in route:
            continue  # the admin's catch-all: nothing there to post to
        if response.status_code != 403:
            accepted.append(f"{key} ({path}) -> {response.status_code}")
    assert not accepted, "POST without a CSRF token was not refused:\n  " + "\n  ".join(accepted)


def test_session_api_writes_need_the_csrf_token_and_work_with_it(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.admin)
    body = json.dumps({"limit_mode": "soft"})

    refused = client.patch("/api/v1/subscription/", body, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"

    client.get("/admin/")  # any page sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    accepted = client.patch(
        "/api/v1/subscription/", body, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert accepted.status_code == 200


@pytest.mark.parametrize("login", ["/admin/login/", "/login/"])
def test_login_forms_need_the_csrf_token(world, login):
    client = Client(enforce_csrf_checks=True)
    credentials = {"username": world.admin.email, "password": factories.PASSWORD}

    assert client.post(login, credentials).status_code == 403
    page = client.get(login)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    assert client.post(login, {**credentials, "csrfmiddlewaretoken": token}).status_code == 302


# --- Production settings --------------------------------------------------------------------------

PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "p9-" + "Zq7#Lm2$Vx8@Rt4%Wk6&Hn3*Jb5^Gd1!Fs0~Cy" * 2,
    "ALLOWED_HOSTS": "creditdesk.example.com",
    "METRICS_TOKEN": "m" * 40,  # without it (or a network), /metrics warns: core.W001
}
SECURITY_SETTINGS = [
    "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "SESSION_COOKIE_SAMESITE",
    "CSRF_COOKIE_SECURE",
    "CSRF_COOKIE_SAMESITE",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "SECURE_REFERRER_POLICY",
    "SECURE_CROSS_ORIGIN_OPENER_POLICY",
    "X_FRAME_OPTIONS",
]
PRODUCTION_CHECK = f"""
import json, django
from django.conf import settings
from django.core.management import call_command
django.setup()
call_command("check", deploy=True, fail_level="WARNING")
print(json.dumps({{name: getattr(settings, name) for name in {SECURITY_SETTINGS!r}}}))
"""


@pytest.fixture(scope="module")
def production_settings() -> dict:
    """``check --deploy`` in a process of its own, with production's environment (no test
    overrides), and the security settings it ended up with."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"))
    }
    env.update(PRODUCTION_ENV, DJANGO_SETTINGS_MODULE="config.settings")
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", PRODUCTION_CHECK],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=settings.BASE_DIR,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_check_deploy_reports_nothing_with_production_settings(production_settings):
    assert production_settings["SESSION_COOKIE_SECURE"] is True
    assert production_settings["CSRF_COOKIE_SECURE"] is True
    assert production_settings["SECURE_SSL_REDIRECT"] is True
    assert production_settings["SECURE_HSTS_SECONDS"] >= 31_536_000


def test_production_sends_secure_cookies_hsts_and_security_headers(world, production_settings):
    values = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in production_settings.items()
    }
    with override_settings(**values, ALLOWED_HOSTS=["creditdesk.example.com"]):
        client = Client(HTTP_HOST="creditdesk.example.com")
        assert client.get("/login/").status_code == 301  # plain HTTP goes to HTTPS
        assert client.get("/login/", secure=True).status_code == 200
        page = client.get("/admin/login/", secure=True)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
        response = client.post(
            "/admin/login/",
            {
                "username": world.admin.email,
                "password": factories.PASSWORD,
                "csrfmiddlewaretoken": token,
            },
            secure=True,
        )
        assert response.status_code == 302

    session, csrf = response.cookies["sessionid"], page.cookies["csrftoken"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"
    assert csrf["secure"] and csrf["samesite"] == "Lax"
    assert response["Strict-Transport-Security"] == ("max-age=31536000; includeSubDomains; preload")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_signing_in_starts_a_new_session(world):
    client = Client()
    client.get("/admin/login/")
    client.session.save()
    before = client.session.session_key

    client.post("/admin/login/", {"username": world.admin.email, "password": factories.PASSWORD})

    assert client.session.session_key != before
    assert client.session["_auth_user_id"] == str(world.admin.pk)
