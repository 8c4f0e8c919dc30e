"""Nothing of one subscription reaches another, through any URL the project serves.

The test walks every URL pattern of ``config.urls`` (the admin's changelists, add, change,
history and delete views, autocomplete, the API, exports, reports, pages) and looks each one
up in ``VIEWS`` or ``ADMIN_MODELS`` below: the table of how to aim a request at Globex's
objects and what must happen. A pattern missing from the table fails the test ("classify this
new view"), so a new view cannot ship untested.

Every probe is sent by each of Acme's roles: anonymous, member, project manager,
subscription admin (by session and by personal token) and Acme's API key. Each response must
be free of 5xx and of every Globex marker (names, emails, EnvironmentId, key prefix, ids; a
marker the probe itself sent may be echoed back); probes aimed at one Globex object must be
refused (403, 404, a redirect to a login or to the admin index); writes must leave all of
Globex's rows as they were. Then the probe's *twin*, a Globex role (or platform staff) that
may see the object, sends it and must see a marker: the probe really reached Globex's data.
"""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import transaction
from django.test.utils import override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.reports.slugs import REPORT_SLUGS
from tests.security.tenants import ID_BASE, Tenants, build_tenants, globex_state

# --- The URL patterns -------------------------------------------------------------------------


def walk(patterns, prefix="", namespace=None):
    """Every URL pattern as ``(key, route)``: the key is the namespaced name, or the route for
    a pattern without a name."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = pattern.namespace or None
            inner = f"{namespace}:{inner}" if namespace and inner else inner or namespace
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            route = prefix + str(pattern.pattern)
            name = f"{namespace}:{pattern.name}" if namespace and pattern.name else pattern.name
            yield name or route, route


PATTERNS = list(dict(walk(get_resolver().url_patterns)).items())


# --- Probes -----------------------------------------------------------------------------------

ACME_ROLES = ("anonymous", "member", "manager", "admin", "admin token", "API key")
# Machines and tokens only speak to the API; elsewhere they are anonymous visitors.
API_ONLY_ROLES = ("admin token", "API key")
REFUSED = {301, 302, 303, 400, 401, 403, 404, 405, 409, 422}


@dataclass
class Probe:
    path: str
    method: str = "GET"
    data: dict | list | None = None
    format: str | None = None  # "json" for API bodies; None sends a form
    refused: bool = False  # aimed at one Globex object: Acme's roles must be turned away
    twin: str | None = None  # who may see it, and must see a Globex marker
    roles: tuple = ACME_ROLES

    def describe(self) -> str:
        data = f" {json.dumps(self.data, default=str)[:200]}" if self.data else ""
        return f"{self.method} {self.path}{data}"

    def sent_text(self) -> str:
        return (self.path + json.dumps(self.data, default=str)).lower()


def get(path, params=None, **options) -> Probe:
    if params:
        path = f"{path}?{'&'.join(f'{name}={value}' for name, value in params.items())}"
    return Probe(path, **options)


def api(method, path, data=None, **options) -> Probe:
    return Probe(path, method=method, data=data, format="json", **options)


def form(path, data, **options) -> Probe:
    return Probe(path, method="POST", data=data, **options)


def g(tenants: Tenants):
    return tenants.globex


# --- The classification table: named views ------------------------------------------------------

PUBLIC = "public: serves nobody's data"


def public(path, method="GET", data=None) -> Callable:
    return lambda t: [Probe(path, method=method, data=data, format="json" if data else None)]


def admin_credit_usage(t):
    sub = g(t).subscription.pk
    return [
        get("/admin/credit-usage/"),
        get("/admin/credit-usage/", {"subscription": sub}, refused=True, twin="globex admin"),
    ]


def admin_credit_usage_member(t):
    path = f"/admin/credit-usage/members/{g(t).member.pk}/"
    return [
        get(path, refused=True, twin=None),
        get(path, {"subscription": g(t).subscription.pk}, refused=True, twin="globex admin"),
    ]


def autocomplete(t):
    """Every autocomplete field of every admin and inline, searched for Globex's people."""
    from django.contrib import admin

    probes = []
    for model, model_admin in admin.site._registry.items():
        sources = [(model, model_admin)] + [
            (inline.model, inline) for inline in model_admin.get_inlines(None, None)
        ]
        for source, owner in sources:
            for field_name in getattr(owner, "autocomplete_fields", ()):
                probes.append(
                    get(
                        "/admin/autocomplete/",
                        {
                            "app_label": source._meta.app_label,
                            "model_name": source._meta.model_name,
                            "field_name": field_name,
                            "term": "globex",
                        },
                        twin="staff",
                    )
                )
    assert probes, "no autocomplete field found: the walker would test nothing"
    return probes


def view_on_site(t):
    content_type = ContentType.objects.get_for_model(g(t).environment)
    return [get(f"/admin/r/{content_type.pk}/{g(t).environment.pk}/", refused=True)]


def api_keys(t):
    sub = g(t).subscription.pk
    environment = str(g(t).environment.public_id)
    return [
        get("/api/v1/api-keys/"),
        get("/api/v1/api-keys/", {"subscription": sub}, refused=True, twin="globex admin token"),
        api("POST", f"/api/v1/api-keys/?subscription={sub}", {"name": "pwned"}, refused=True),
        api("POST", "/api/v1/api-keys/", {"name": "pwned", "environment": environment}),
    ]


def api_key_revoke(t):
    path = f"/api/v1/api-keys/{g(t).api_key.prefix}/revoke/"
    return [
        api("POST", path, refused=True),
        api("POST", f"{path}?subscription={g(t).subscription.pk}", refused=True),
    ]


def subscription_settings(t):
    sub = g(t).subscription.pk
    return [
        get("/api/v1/subscription/"),
        get("/api/v1/subscription/", {"subscription": sub}, refused=True, twin="globex admin"),
        api(
            "PATCH",
            f"/api/v1/subscription/?subscription={sub}",
            {"limit_mode": "soft", "excess_allowance": "99"},
            refused=True,
        ),
    ]


def usage_event(t, **overrides):
    event = {
        "idempotency_key": "probe-1",
        "environment": str(t.acme_environment.public_id),
        "product": "ai-agent",
        "credits": "1",
    }
    return {**event, **overrides}


def record_event(t):
    globex = g(t)
    path = "/api/v1/events/"
    return [
        api(
            "POST",
            path,
            usage_event(t, environment=str(globex.environment.public_id)),
            refused=True,
            twin="globex API key",
        ),
        api("POST", path, usage_event(t, user=globex.member.email), refused=True),
        api("POST", path, usage_event(t, agent=str(globex.agent.pk)), refused=True),
        # Globex's idempotency key, reused by Acme, is Acme's own new key.
        api("POST", path, usage_event(t, idempotency_key="GLOBEX-SECRET-IDEMPOTENCY-1")),
    ]


def record_batch(t):
    globex = g(t)
    events = [
        usage_event(t, environment=str(globex.environment.public_id)),
        usage_event(t, idempotency_key="probe-2", user=globex.member.email),
        usage_event(t, idempotency_key="probe-3", agent=str(globex.agent.pk)),
    ]
    return [api("POST", "/api/v1/events/batch/", {"events": events})]


def balance(t):
    globex = g(t)
    return [
        get("/api/v1/balance/"),
        get(
            "/api/v1/balance/",
            {"subscription": globex.subscription.pk},
            refused=True,
            twin="globex admin token",
            roles=ACME_ROLES[:5],  # a key reads its own subscription's balance, whatever asked
        ),
        get("/api/v1/balance/", {"environment": globex.environment.public_id}, refused=True),
        get("/api/v1/balance/", {"user": globex.member.email}, refused=True),
    ]


def limits(t):
    sub = g(t).subscription.pk
    return [
        get("/api/v1/limits/"),
        get("/api/v1/limits/", {"subscription": sub}, refused=True, twin="globex admin"),
    ]


def limit_of(kind, owner_id):
    def probes(t):
        sub = g(t).subscription.pk
        path = f"/api/v1/limits/{kind}/{owner_id(t)}/"
        with_sub = f"{path}?subscription={sub}"
        return [
            get(path, refused=True),
            get(with_sub, refused=True, twin="globex admin token"),
            api("PUT", path, {"credits": "1"}, refused=True),
            api("PUT", with_sub, {"credits": "1"}, refused=True),
            api("DELETE", path, refused=True),
            api("DELETE", with_sub, refused=True),
        ]

    return probes


def export(t):
    globex = g(t)
    sub, environment = globex.subscription.pk, globex.environment.public_id
    path = "/api/v1/exports/credit-usage/"
    probes = []
    for fmt in ("json", "csv"):
        probes += [
            get(path, {"scope": "mine", "format": fmt}),
            get(path, {"scope": "subscription", "format": fmt}),
            get(
                path,
                {"scope": "subscription", "subscription": sub, "format": fmt},
                refused=True,
                twin="globex admin",
            ),
            get(path, {"scope": "mine", "subscription": sub, "format": fmt}, refused=True),
            get(
                path,
                {"scope": "environment", "environment": environment, "format": fmt},
                refused=True,
                twin="globex manager",
            ),
            get(path, {"scope": "mine", "environment": environment, "format": fmt}, refused=True),
        ]
    return probes


def usage(t):
    globex = g(t)
    path = "/api/v1/usage/"
    every = "user,team,environment,project,product,feature,agent,model,api_key,sub_account"
    base = {"group_by": every, "window": "month"}
    # Without the per-person groupings, which a plan may refuse: the twin must see Globex.
    theirs = {
        "group_by": "environment,project,agent,api_key,sub_account",
        "window": "month",
        "subscription": globex.subscription.pk,
    }
    return [
        get(path, base),
        get(path, {**base, "format": "csv"}),
        get(path, {**base, "window": "hour"}),
        get(path, {**base, "include_sub_accounts": "true"}),
        get(path, theirs, refused=True, twin="globex admin"),
        get(path, {**theirs, "format": "csv"}, refused=True),
        *(
            get(path, {**base, name: value}, refused=True)
            for name, value in (
                ("user", globex.member.pk),
                ("team", globex.team.pk),
                ("environment", globex.environment.public_id),
                ("project", globex.project.pk),
                ("agent", globex.agent.pk),
                ("api_key", globex.api_key.prefix),
                ("sub_account", globex.sub_account.pk),
                ("feature", "GLOBEX-SECRET-FEATURE"),
            )
        ),
    ]


def report(slug):
    def probes(t):
        globex = g(t)
        path = f"/api/v1/reports/{slug}/"
        base = {"timeframe": "this_month"}
        return [
            get(path, base),
            get(path, {**base, "format": "csv"}),
            get(path, {**base, "include_sub_accounts": "true"}),
            get(
                path,
                {**base, "subscription": globex.subscription.pk},
                refused=True,
                twin="globex admin",
            ),
            get(
                path,
                {**base, "subscription": globex.subscription.pk, "format": "csv"},
                refused=True,
                # The product report's rows name only the shared catalogue's products.
                twin=None if slug == "usage-by-product" else "globex admin",
            ),
            get(path, {**base, "team": globex.team.pk}),
            get(path, {**base, "created_by": globex.admin.email}),
            get(path, {**base, "feature": "GLOBEX-SECRET-FEATURE"}),
        ]

    return probes


def my_usage(t):
    globex = g(t)
    return [
        get("/usage/"),
        get(
            "/usage/",
            {"environment": globex.environment.public_id},
            refused=True,
            twin="globex member",
        ),
        get("/usage/", {"scope": f"subscription:{globex.subscription.pk}"}, refused=True),
        get("/usage/", {"scope": f"environment:{globex.environment.public_id}"}, refused=True),
    ]


def reports_page(t):
    subscription = g(t).subscription.pk
    return [
        get("/usage/reports/"),
        get("/usage/reports/", {"include_sub_accounts": "true", "timeframe": "last_12_months"}),
        get("/usage/reports/", {"subscription": subscription}, refused=True, twin="globex member"),
    ]


def admin_reports(t):
    subscription = g(t).subscription.pk
    return [
        get("/admin/reports/", {"include_sub_accounts": "true"}),
        get("/admin/reports/", {"subscription": subscription}, refused=True, twin="globex admin"),
    ]


def report_download(t):
    """The Reports page's download: the report API's answer, aimed at Globex the same ways."""
    globex = g(t)
    path = "/usage/reports/usage-by-agent/download/"
    base = {"timeframe": "this_month", "format": "json"}
    return [
        get(path, base),
        get(path, {**base, "format": "csv", "include_sub_accounts": "true"}),
        get(
            path,
            {**base, "subscription": globex.subscription.pk},
            refused=True,
            twin="globex admin",
        ),
        get(path, {**base, "team": globex.team.pk}),
        get(path, {**base, "created_by": globex.admin.email}),
    ]


def environment_usage(t):
    environment = g(t).environment.public_id
    return [
        get("/usage/environments/"),
        get(
            "/usage/environments/",
            {"environment": environment},
            refused=True,
            twin="globex manager",
        ),
    ]


def environment_member_usage(t):
    globex = g(t)
    path = f"/usage/environments/members/{globex.member.pk}/"
    return [
        get(path, refused=True),
        get(
            path,
            {"environment": globex.environment.public_id},
            refused=True,
            twin="globex manager",
        ),
    ]


def adjustment(t):
    return [
        get("/admin/credits/creditevent/adjust/", twin="staff"),
        form(
            "/admin/credits/creditevent/adjust/",
            {"subscription": g(t).subscription.pk, "credits": "-500", "reason": "pwned"},
            refused=True,
        ),
    ]


def admin_password_change_of(t):
    path = f"/admin/accounts/user/{g(t).member.pk}/password/"
    password = "a-long-unusual-password-42"
    return [
        get(path, refused=True, twin="globex admin"),
        form(path, {"password1": password, "password2": password}, refused=True),
    ]


def grants(t):
    sub = g(t).subscription.pk
    grant = {"kind": "bonus", "credits": "5", "reason": "pwned"}
    return [
        get("/api/v1/grants/"),
        get("/api/v1/grants/", {"subscription": sub}, refused=True, twin="globex admin token"),
        api("POST", f"/api/v1/grants/?subscription={sub}", grant, refused=True),
        api("POST", "/api/v1/grants/", {**grant, "subscription": sub}, refused=True),
    ]


def webhook_endpoints(t):
    sub = g(t).subscription.pk
    endpoint = {"name": "pwned", "url": "https://example.com/hooks"}
    return [
        get("/api/v1/webhooks/"),
        get("/api/v1/webhooks/", {"subscription": sub}, refused=True, twin="globex admin token"),
        api("POST", f"/api/v1/webhooks/?subscription={sub}", endpoint, refused=True),
    ]


def webhook_endpoint(action="", method="POST"):
    def probes(t):
        path = f"/api/v1/webhooks/{g(t).webhook_endpoint.pk}/{action}"
        if method == "GET":
            return [get(path, refused=True, twin="globex admin token")]
        if action:
            return [api(method, path, refused=True)]
        return [
            get(path, refused=True, twin="globex admin token"),
            api("PATCH", path, {"url": "https://example.com/pwned"}, refused=True),
            api("PUT", path, {"name": "pwned", "url": "https://example.com/pwned"}, refused=True),
            api("DELETE", path, refused=True),
        ]

    return probes


def webhook_redeliver(t):
    globex = g(t)
    path = f"/api/v1/webhooks/{globex.webhook_endpoint.pk}/deliveries/"
    return [api("POST", f"{path}{globex.webhook_delivery.pk}/redeliver/", refused=True)]


def report_schedules(t):
    globex = g(t)
    schedule = {
        "name": "pwned",
        "frequency": "weekly",
        "recipients": ["pwned@example.com"],
        "scope": "subscription",
    }
    return [
        get("/api/v1/report-schedules/", twin="globex admin"),
        api(
            "POST",
            "/api/v1/report-schedules/",
            {**schedule, "subscription": globex.subscription.pk},
            refused=True,
        ),
        api(
            "POST",
            "/api/v1/report-schedules/",
            {**schedule, "scope": "environment", "environment": str(globex.environment.public_id)},
            refused=True,
        ),
    ]


def report_schedule(t):
    path = f"/api/v1/report-schedules/{g(t).schedule.pk}/"
    return [
        get(path, refused=True, twin="globex admin"),
        api("PATCH", path, {"enabled": False, "recipients": ["pwned@example.com"]}, refused=True),
        api("PUT", path, {"name": "pwned", "recipients": ["pwned@example.com"]}, refused=True),
        api("DELETE", path, refused=True),
    ]


def usage_schedule_new(t):
    """A manager's new schedule can only name an environment they manage."""
    fields = {
        "name": "pwned",
        "enabled": "on",
        "frequency": "weekly",
        "weekday": 0,
        "send_time": "08:00",
        "environment": g(t).environment.pk,
        "recipients": "pwned@example.com",
    }
    return [get("/usage/schedules/new/"), form("/usage/schedules/new/", fields)]


def usage_schedule(suffix: str, *, gets: bool = True) -> Callable:
    """A manager's schedule page (or one of its buttons), aimed at Globex's schedule."""

    def probes(t):
        path = f"/usage/schedules/{g(t).schedule.pk}/{suffix}"
        posted = form(path, {"name": "pwned", "recipients": "pwned@example.com"}, refused=True)
        return [get(path, refused=True), posted] if gets else [posted]

    return probes


def admin_schedule_send_test(t):
    path = reverse("admin:reports_reportschedule_send_test", args=[g(t).schedule.pk])
    return [get(path, refused=True), form(path, {}, refused=True)]


def report_unsubscribe(t):
    """Nobody but the holder of a recipient's signed link reaches a schedule: a link whose
    schedule id was changed (its signature no longer matches) is refused."""
    from django.core import signing

    from reports.unsubscribe import SALT

    forged = signing.dumps({"schedule": g(t).schedule.pk, "email": "x@acme.example"}, salt="x")
    tampered = g(t).unsubscribe_token[:-2] + (
        "AA" if not g(t).unsubscribe_token.endswith("AA") else "BB"
    )
    assert SALT != "x"
    probes = []
    for token in (forged, tampered):
        path = f"/reports/unsubscribe/{token}/"
        probes += [get(path, refused=True), form(path, {"action": "resubscribe"}, refused=True)]
    probes.append(
        get(f"/reports/unsubscribe/{g(t).unsubscribe_token}/", twin="anonymous", roles=())
    )
    return probes


def large_export_download(t):
    """A large export goes to whoever holds its signed link: a link to another path, or one
    whose signature was altered, finds nothing."""
    from django.core import signing

    from reports.large_exports import SALT

    path = g(t).export_path
    valid = signing.dumps(path, salt=SALT)
    return [
        get(f"/exports/download/{signing.dumps(path, salt='guessed')}/", refused=True),
        get(f"/exports/download/{valid[:-1] + ('A' if valid[-1] != 'A' else 'B')}/", refused=True),
        get(f"/exports/download/{path.replace('/', '%2F')}/", refused=True),
        get(f"/exports/download/{valid}/", twin="anonymous", roles=()),
    ]


def admin_app_index(t):
    apps = ("accounts", "credits", "reports", "auth", "authtoken")
    return [get(f"/admin/{app}/") for app in apps]


# Each named view (or unnamed route): how to aim it at Globex, and what must happen.
VIEWS: dict[str, Callable[[Tenants], list[Probe]]] = {
    # Public pages: no tenant data at all, whoever asks.
    "health": public("/health/"),
    # Operators' counters of every tenant: no user, admin or API key may read them.
    "metrics": lambda t: [get("/metrics", refused=True)],
    "favicon": public("/favicon.ico"),
    "schema": public("/api/schema/"),
    "swagger": public("/api/schema/swagger/"),
    "redoc": public("/api/schema/redoc/"),
    "usage-login": public("/login/"),
    "usage-logout": public("/logout/"),
    "home": public("/"),
    "admin:login": public("/admin/login/"),
    "admin:logout": public("/admin/logout/"),
    "admin:jsi18n": public("/admin/jsi18n/"),
    "admin:password_change": public("/admin/password_change/"),
    "admin:password_change_done": public("/admin/password_change/done/"),
    # The token endpoint answers the same for another tenant's email as for nobody's.
    "auth-token": lambda t: [
        api("POST", "/api/v1/auth/token/", {"email": g(t).admin.email, "password": "guess"})
    ],
    # The admin's own views.
    "admin:index": lambda t: [get("/admin/")],
    "admin:app_list": admin_app_index,
    "admin:autocomplete": autocomplete,
    "admin:view_on_site": view_on_site,
    "admin:credits_creditevent_adjust": adjustment,
    "admin:auth_user_password_change": admin_password_change_of,
    "admin-credit-usage": admin_credit_usage,
    "admin-credit-usage-member": admin_credit_usage_member,
    "admin-reports": admin_reports,
    r"admin/(?P<url>.*)$": lambda t: [
        get(f"/admin/accounts/project/{g(t).project.pk}/nonsense/", refused=True)
    ],
    # The API.
    "api-keys": api_keys,
    "api-key-revoke": api_key_revoke,
    "subscription": subscription_settings,
    "record-event": record_event,
    "record-batch": record_batch,
    "balance": balance,
    "limits": limits,
    "grants": grants,
    "user-limit": limit_of("users", lambda t: g(t).member.pk),
    "team-limit": limit_of("teams", lambda t: g(t).team.pk),
    "webhooks": webhook_endpoints,
    "webhook": webhook_endpoint(),
    "webhook-rotate": webhook_endpoint("rotate/"),
    "webhook-test": webhook_endpoint("test/"),
    "webhook-deliveries": webhook_endpoint("deliveries/", method="GET"),
    "webhook-redeliver": webhook_redeliver,
    "export-credit-usage": export,
    "usage": usage,
    **{f"report-{slug}": report(slug) for slug in REPORT_SLUGS},
    # Pages.
    "my-usage": my_usage,
    "environment-usage": environment_usage,
    "environment-member-usage": environment_member_usage,
    "reports-page": reports_page,
    "report-download": report_download,
    # Scheduled reports.
    "report-schedules": report_schedules,
    "report-schedule": report_schedule,
    "report-unsubscribe": report_unsubscribe,
    "admin:reports_reportschedule_send_test": admin_schedule_send_test,
    "usage-schedules": lambda t: [get("/usage/schedules/")],
    "usage-schedule-new": usage_schedule_new,
    "usage-schedule": usage_schedule(""),
    "usage-schedule-pause": usage_schedule("pause/", gets=False),
    "usage-schedule-delete": usage_schedule("delete/"),
    "usage-schedule-send-test": usage_schedule("send-test/", gets=False),
    "large-export-download": large_export_download,
}


# --- The classification table: the admin of each model -----------------------------------------

PLATFORM = "platform"  # a model only platform staff manage: subscription admins get a 403


@dataclass(frozen=True)
class AdminModel:
    globex_object: Callable | str  # Globex's object of this model, or PLATFORM
    twin: str = "staff"  # who, besides staff, may open it
    shared: bool = False  # the shared product catalogue: everyone reads it, nobody's data in it
    post: dict = field(default_factory=dict)  # extra form fields for the hostile add/change


def _name_and_owner(t) -> dict:
    globex = g(t)
    return {
        "name": "pwned",
        "subscription": globex.subscription.pk,
        "project": globex.project.pk,
        "environment": globex.environment.pk,
        "user": globex.member.pk,
        "team": globex.team.pk,
        "role": "member",
        "credits": "1",
        "limit_mode": "soft",
        "excess_allowance": "1",
        "email": "pwned@example.com",
        "is_active": "",
        "password1": "a-long-unusual-password-42",
        "password2": "a-long-unusual-password-42",
        "usable_password": "true",
    }


ID_OF_GLOBEX_GRANT = ID_BASE + 18

ADMIN_MODELS: dict[str, AdminModel] = {
    "accounts.subscription": AdminModel(lambda t: g(t).subscription, twin="globex admin"),
    "accounts.project": AdminModel(lambda t: g(t).project, twin="globex admin"),
    "accounts.environment": AdminModel(lambda t: g(t).environment, twin="globex admin"),
    "accounts.membership": AdminModel(lambda t: g(t).member.memberships.get(), twin="globex admin"),
    "accounts.team": AdminModel(lambda t: g(t).team, twin="globex admin"),
    "accounts.apikey": AdminModel(lambda t: g(t).api_key, twin="globex admin"),
    "accounts.user": AdminModel(lambda t: g(t).member, twin="globex admin"),
    "accounts.auditevent": AdminModel(lambda t: g(t).audit_event, twin="globex admin"),
    "credits.agent": AdminModel(lambda t: g(t).agent, twin="globex admin"),
    "credits.billingperiod": AdminModel(lambda t: g(t).period, twin="globex admin"),
    "credits.creditevent": AdminModel(lambda t: g(t).event, twin="globex admin"),
    "credits.creditlimit": AdminModel(lambda t: g(t).user_limit, twin="globex admin"),
    "reports.reportschedule": AdminModel(lambda t: g(t).schedule, twin="globex admin"),
    "credits.webhookendpoint": AdminModel(lambda t: g(t).webhook_endpoint, twin="globex admin"),
    "credits.webhookdelivery": AdminModel(lambda t: g(t).webhook_delivery, twin="globex admin"),
    "credits.alertrule": AdminModel(lambda t: g(t).alert_rule, twin="globex admin"),
    "reports.delivery": AdminModel(lambda t: g(t).delivery, twin="globex admin"),
    "credits.product": AdminModel(
        lambda t: g(t).event.product,
        shared=True,  # enabled for Globex: staff see that
    ),
    # The plans' price list names no tenant: there is nothing of Globex's for a twin to see.
    "credits.planprice": AdminModel(lambda t: g(t).plan_price, twin=None, shared=True),
    "credits.subscriptionprice": AdminModel(lambda t: g(t).subscription_price, twin="globex admin"),
    "credits.creditgrant": AdminModel(lambda t: g(t).grant, twin="globex admin"),
    "credits.grantadjustment": AdminModel(
        lambda t: g(t).grant_adjustment, twin="globex admin", post={"grant": ID_OF_GLOBEX_GRANT}
    ),
    "auth.group": AdminModel(PLATFORM),
    "authtoken.tokenproxy": AdminModel(PLATFORM),
    "django_celery_beat.periodictask": AdminModel(PLATFORM),
    "django_celery_beat.clockedschedule": AdminModel(PLATFORM),
    "django_celery_beat.crontabschedule": AdminModel(PLATFORM),
    "django_celery_beat.solarschedule": AdminModel(PLATFORM),
    "django_celery_beat.intervalschedule": AdminModel(PLATFORM),
}


# Admin actions aimed at Globex's objects from Acme's changelists (they must change nothing).
ADMIN_ACTIONS = {
    "credits.webhookendpoint": ("send_test_event", "rotate_secret"),
    "credits.webhookdelivery": ("redeliver",),
}


def admin_label(key: str) -> tuple[str, str] | None:
    """``(app_label.model, view)`` for a pattern of a model's admin, else None."""
    from django.contrib import admin

    for model in admin.site._registry:
        opts = model._meta
        prefix = f"admin:{opts.app_label}_{opts.model_name}_"
        if key.startswith(prefix) and key[len(prefix) :] in ADMIN_VIEWS:
            return opts.label_lower, key[len(prefix) :]
        if re.fullmatch(rf"admin/{opts.app_label}/{opts.model_name}/<\w+:object_id>/", key):
            return opts.label_lower, "redirect"
    return None


ADMIN_VIEWS = ("changelist", "add", "change", "history", "delete")


def staff_may(action: str, obj, t: Tenants) -> bool:
    """Whether platform staff may ``action`` (add, delete) here: read-only admins refuse even
    them, and then there is no twin to prove the probe."""
    from django.contrib import admin
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.user = t.staff
    model_admin = admin.site.get_model_admin(type(obj))
    if action == "add":
        return model_admin.has_add_permission(request)
    return model_admin.has_delete_permission(request, obj)


def admin_probes(label: str, view: str, t: Tenants) -> list[Probe]:
    spec = ADMIN_MODELS[label]
    app_label, model_name = label.split(".")
    base = f"admin:{app_label}_{model_name}"
    if spec.globex_object == PLATFORM:
        return _platform_probes(base, view, app_label, model_name)
    obj = spec.globex_object(t)
    # The shared catalogue names no tenant, except to staff in a product's change view.
    twin = (spec.twin if view == "change" else None) if spec.shared else spec.twin
    refused = not spec.shared
    object_id = quote(obj.pk)
    if view == "changelist":
        url = reverse(f"{base}_changelist")
        return [
            get(url, twin=twin and "staff"),
            get(url, {"q": "globex"}, twin=twin and "staff"),
            form(url, {"action": "delete_selected", "_selected_action": obj.pk, "post": "yes"}),
            *(
                [form(url, {"action": "revoke", "_selected_action": obj.pk})]
                if label == "accounts.apikey"
                else []
            ),
            *(
                form(url, {"action": action, "_selected_action": obj.pk})
                for action in ADMIN_ACTIONS.get(label, ())
            ),
        ]
    if view == "add":
        url = reverse(f"{base}_add")
        twin = "staff" if spec.twin and staff_may("add", obj, t) else None
        return [get(url, twin=twin), form(url, {**_name_and_owner(t), **spec.post})]
    if view == "redirect":
        change = reverse(f"{base}_change", args=[object_id])  # an API key's names its prefix
        return [get(change.removesuffix("change/"), refused=refused)]
    url = reverse(f"{base}_{view}", args=[object_id])
    if view == "delete":
        twin = "staff" if twin and staff_may("delete", obj, t) else None
    probes = [get(url, refused=refused, twin=twin)]
    if view == "change":
        probes.append(form(url, {**_name_and_owner(t), **spec.post}, refused=refused))
    if view == "delete":
        probes.append(form(url, {"post": "yes"}, refused=refused))
    return probes


def _platform_probes(base, view, app_label, model_name) -> list[Probe]:
    if view == "redirect":
        return [get(f"/admin/{app_label}/{model_name}/1/", refused=True)]
    args = [] if view in ("changelist", "add") else ["1"]
    return [get(reverse(f"{base}_{view}", args=args), refused=True)]


def classify(key: str) -> Callable[[Tenants], list[Probe]] | None:
    if key in VIEWS:
        return VIEWS[key]
    found = admin_label(key)
    if found and found[0] in ADMIN_MODELS:
        label, view = found
        return lambda t: admin_probes(label, view, t)
    return None


# --- The walk ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tenants(django_db_setup, django_db_blocker, tmp_path_factory):
    """Built once for the module inside a transaction that is rolled back at the end; each test
    runs in a savepoint of it (pytest-django's ``db``), so probes that write are undone. Files
    (the large export) go to a temporary media folder."""
    with (
        django_db_blocker.unblock(),
        override_settings(
            PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
            MEDIA_ROOT=str(tmp_path_factory.mktemp("media")),
        ),
        transaction.atomic(),
    ):
        assert MD5PasswordHasher  # the hasher named above
        yield build_tenants()
        transaction.set_rollback(True)


def body_of(response) -> str:
    if getattr(response, "streaming", False):
        content = b"".join(response.streaming_content)
    else:
        content = response.content
    return content.decode("utf-8", errors="replace").lower()


def send(client, probe: Probe):
    method = getattr(client, probe.method.lower())
    if probe.method == "GET":
        response = method(probe.path)
    elif probe.format:
        response = method(probe.path, probe.data, format=probe.format)
    else:
        response = method(probe.path, probe.data or {})
    # The admin's "object not found" message names the id asked for; it must not surface as
    # a leak in the next probe's page.
    client.cookies.pop("messages", None)
    return response


def leaked(markers: dict[str, str], body: str, probe: Probe) -> list[str]:
    sent = probe.sent_text()
    return [
        name
        for name, marker in markers.items()
        if marker.lower() not in sent
        and (
            re.search(rf"(?<!\d){marker}(?!\d)", body)
            if marker.isdigit()
            else marker.lower() in body
        )
    ]


def roles_for(probe: Probe) -> tuple:
    if probe.path.startswith("/api/"):
        return probe.roles
    return tuple(role for role in probe.roles if role not in API_ONLY_ROLES)


def test_every_url_pattern_is_classified():
    unclassified = [f"{key}  ({route})" for key, route in PATTERNS if classify(key) is None]
    assert not unclassified, (
        "classify this new view in tests/security/test_tenant_isolation.py (VIEWS, or "
        "ADMIN_MODELS for a model admin): say how to aim it at another subscription's "
        "objects and what each role must get:\n  " + "\n  ".join(unclassified)
    )


@pytest.mark.parametrize(("key", "route"), PATTERNS, ids=[key for key, _ in PATTERNS])
def test_nothing_of_another_subscription_is_visible_or_changeable(key, route, tenants, db):
    cache.clear()  # throttles count per process: start every view afresh
    build = classify(key)
    assert build is not None, f"classify this new view: {key} ({route})"
    probes = build(tenants)
    markers = tenants.markers()
    before = globex_state(tenants.globex)
    problems = []
    for probe in probes:
        for role in roles_for(probe):
            response = send(tenants.clients[role], probe)
            where = f"{role}: {probe.describe()} -> {response.status_code}"
            if response.status_code >= 500:
                problems.append(f"{where}: server error")
                continue
            if found := leaked(markers, body_of(response), probe):
                problems.append(f"{where}: shows Globex's {', '.join(found)}")
            if probe.refused and response.status_code not in REFUSED:
                problems.append(f"{where}: another subscription's object was not refused")
    after = globex_state(tenants.globex)
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"Acme's requests to {key} changed Globex's {changed}"
    for probe in probes:
        if probe.twin:
            response = send(tenants.clients[probe.twin], probe)
            body = body_of(response)
            if not 200 <= response.status_code < 300 or not leaked(markers, body, probe):
                problems.append(
                    f"twin {probe.twin}: {probe.describe()} -> {response.status_code} shows "
                    "no Globex marker: the probe does not reach Globex's data"
                )
    assert not problems, f"{key} ({route}):\n  " + "\n  ".join(problems)
