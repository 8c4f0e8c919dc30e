"""No hand filter on a tenant model outside the scoping layer.

Every read of tenant data in API, view, selector, page, email, export, task and admin code
starts from the scoping layer: ``Model.objects.visible_to(principal)`` (people and API keys),
``Model.objects.administered_by(user)`` (the admin's mode) or
``Environment.objects.managed_by(user)``. A ``Model.objects.filter(subscription=...)`` there
is the bug the layer exists to prevent, so this test reads the source (``ast``) and fails on
any other use of a tenant model's manager or ``_default_manager``, or of a tenant model's
table in raw SQL (``Model._meta.db_table``), except the system paths listed in ``ALLOWED``
with the reason each may read as the system.

Every module is inspected but the layer itself and the services (``NOT_INSPECTED``), which
write after the caller resolved through the layer what the principal may touch. Management
commands and migrations run as the system for every subscription.
"""

import ast
from pathlib import Path

from django.apps import apps

ROOT = Path(__file__).resolve().parents[2]
APPS = ("accounts", "credits", "reports")
# Every module reads for someone (HTTP, admin, selectors, pages, emails, exports, tasks) except
# these, which write or run as the system after the caller resolved what it may touch, or are
# the layer itself.
NOT_INSPECTED = {
    "audit.py",  # records changes; reads the layer's subscription_lookup
    "authentication.py",  # finds the key that makes a principal
    "billing.py",
    "bulk.py",
    "charging.py",
    "ledger.py",  # writes the events recording resolved, their keys and rollups
    "grants.py",  # adds grants and prices to a resolved subscription; lapses every expired grant
    "demo.py",
    "limits.py",
    "login_throttle.py",
    "models.py",
    "partitions.py",
    "pruning.py",
    "recording.py",
    "rollups.py",
    "scoping.py",
    "alert_rules.py",  # evaluates every subscription's rules and sends their crossings
    "webhooks.py",  # publishes and delivers what a service or the system raised
    "services.py",
    "signals.py",
}
# Not tenant data: the product catalogue and the plans' price list are shared by every
# subscription.
SHARED_MODELS = {"Product", "PlanPrice"}
SCOPE_METHODS = {"visible_to", "administered_by", "managed_by", "none"}

# (module, function, model): why it may read without the layer.
ALLOWED = {
    # --- System paths: they act for the system, or on rows the layer already resolved ------
    ("credits/pricing.py", "PriceList.__init__", "SubscriptionPrice"): (
        "the prices of the subscription the recording service charges, for the system"
    ),
    ("credits/pricing.py", "price_at", "SubscriptionPrice"): (
        "the price in effect for a subscription the caller resolved through visible_to"
    ),
    # A balance is the subscription's totals (never plan gated), read in one statement (raw
    # SQL naming the tables) for a subscription, user and key the caller resolved through
    # visible_to: the period's counters, its grants, the user's and team's limits and use.
    **{
        ("credits/selectors.py", "_balance_sql", model): (
            "a balance's totals, of a subscription the caller resolved through visible_to"
        )
        for model in (
            "BillingPeriod",
            "CreditGrant",
            "CreditLimit",
            "UserPeriodUsage",
            "TeamPeriodUsage",
            "ApiKeyPeriodUsage",
            "TeamMembership",
        )
    },
    ("credits/limits_api.py", "_limit_response", "CreditLimit"): (
        "rereads the limit the service just wrote, in a subscription the admin administers"
    ),
    ("credits/notifications.py", "send_alert", "ThresholdAlert"): (
        "the alert task claims its alert for the system (exactly-once sends)"
    ),
    ("credits/notifications.py", "_claim_alert", "ThresholdAlert"): (
        "the alert task claims its alert for the system (exactly-once sends)"
    ),
    ("credits/recipients.py", "admin_emails", "User"): (
        "who receives a subscription's alerts: its admins, looked up for the system"
    ),
    ("credits/notifications.py", "_message", "BillingPeriod"): (
        "the reset notice compares with the period that just ended, for the system"
    ),
    ("credits/notifications.py", "send_unsent_alerts", "ThresholdAlert"): (
        "the sweep that sends the alerts whose email was never sent, for the system"
    ),
    ("credits/notifications.py", "unsent_alerts", "ThresholdAlert"): (
        "how many alerts of all subscriptions owe an email, a number for /metrics"
    ),
    ("reports/large_exports.py", "write_and_deliver", "User"): (
        "the export task loads the person who asked, then reads through visible_to as them"
    ),
    ("reports/unsubscribe.py", "unsubscribe", "Unsubscribe"): (
        "an unsubscribe link acts for the recipient its signed token names, not for a "
        "signed-in person"
    ),
    ("reports/unsubscribe.py", "resubscribe", "Unsubscribe"): (
        "an unsubscribe link acts for the recipient its signed token names"
    ),
    ("reports/unsubscribe.py", "unsubscribe_view", "ReportSchedule"): (
        "an unsubscribe link names its schedule in a signed token"
    ),
    ("reports/unsubscribe.py", "unsubscribe_view", "Unsubscribe"): (
        "an unsubscribe link acts for the recipient its signed token names"
    ),
    ("accounts/admin.py", "TeamMembershipFormSet.clean", "TeamMembership"): (
        "validating a team's members (one team per person) against every row of the team's "
        "own subscription, like a unique check"
    ),
    ("accounts/admin.py", "TeamMembershipFormSet.clean", "Membership"): (
        "validating that a team's members hold a role in the team's own subscription"
    ),
    ("accounts/admin.py", "UserAdmin.has_change_permission", "Membership"): (
        "whether a person holds roles beyond what the admin administers must look beyond it"
    ),
    ("accounts/admin.py", "UserAdmin.has_change_permission", "User"): (
        "whether a person's sign-in opens more than the admin administers must look beyond it"
    ),
    ("credits/admin.py", "CreditLimitForm.clean", "Membership"): (
        "validating that a limit's user holds a role in the limit's own subscription"
    ),
    ("reports/selectors.py", "usage_by_team", "TeamMembership"): (
        "whether a person the reader sees is in some team, to say 'Other teams' rather than "
        "'No team'; the team is named only through Team.objects.visible_to"
    ),
    ("reports/selectors.py", "_export_environment", "Environment"): (
        "an environment of a subscription the reader belongs to, by its public id; what the "
        "export then reads is the reader's own rows, or needs a manager or admin role"
    ),
    ("accounts/admin_scoping.py", "administered_choices", "model"): (
        "platform superusers choose from every row of a model whose admin is not scoped"
    ),
    # A statement is the account's totals (never plan gated, like its balance), of accounts
    # the caller resolved through visible_to (the API, the page, the email) or of periods the
    # announcing task claimed for the system; it reads the ledger by period, in a fixed
    # number of queries for any number of accounts.
    **{
        ("reports/statements.py", function, model): (
            "a statement's totals, of accounts the caller resolved through the scoping layer"
        )
        for function, model in (
            ("build_statements", "BillingPeriod"),
            ("build_statements", "SubscriptionPrice"),
            ("build_statements", "CreditGrant"),
            ("build_statements", "GrantAdjustment"),
            ("_usage_by_interval", "CreditEvent"),
            ("_late_corrections", "CreditEvent"),
        )
    },
    **{
        ("credits/notifications.py", "claim_reset_notices", model): (
            "the month-start task claims every current period's reset notice, for the system"
        )
        for model in ("ThresholdAlert", "BillingPeriod", "Subscription")
    },
    **{
        ("reports/statements.py", "_claim_closed", model): (
            "the task announcing closed statements claims every closed period, for the system"
        )
        for model in ("StatementClosure", "BillingPeriod")
    },
    ("reports/statements.py", "announce_closed_statements", "BillingPeriod"): (
        "the task announcing closed statements loads the periods it claimed, for the system"
    ),
}


def inspected_modules():
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if {"migrations", "management"} & set(path.parts):
                continue
            if path.name not in NOT_INSPECTED:
                yield path


def tenant_models() -> set[str]:
    return {
        model.__name__
        for app in APPS
        for model in apps.get_app_config(app).get_models()
        if model.__name__ not in SHARED_MODELS
    }


class HandFilters(ast.NodeVisitor):
    """``Model.objects.<method>`` and ``<anything>._default_manager.<method>`` whose method is
    not a mode of the scoping layer, and ``Model._meta.db_table`` (raw SQL), with the
    (qualified) function they are in."""

    def __init__(self, models: set[str]):
        self.models, self.functions, self.found = models, [], []

    def visit_FunctionDef(self, node):
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Attribute(self, node):
        manager = node.value
        if isinstance(manager, ast.Attribute) and node.attr not in SCOPE_METHODS:
            owner = manager.value
            model = owner.id if isinstance(owner, ast.Name) else None
            if manager.attr == "objects" and model in self.models:
                self.found.append((self._where(), model, node.attr, node.lineno))
            elif manager.attr == "_default_manager":
                self.found.append((self._where(), model or "?", node.attr, node.lineno))
            elif manager.attr == "_meta" and node.attr == "db_table" and model in self.models:
                self.found.append((self._where(), model, node.attr, node.lineno))
        self.generic_visit(node)

    def _where(self) -> str:
        return ".".join(self.functions) or "<module>"


def hand_filters() -> list[tuple]:
    models = tenant_models()
    found = []
    for path in inspected_modules():
        module = path.relative_to(ROOT).as_posix()
        finder = HandFilters(models)
        finder.visit(ast.parse(path.read_text(), filename=module))
        found += [(module, *hit) for hit in finder.found]
    return found


def test_no_hand_filter_on_a_tenant_model_outside_the_scoping_layer():
    offenders = [
        f"{module}:{line} {function}(): "
        + (f"{model}._meta.db_table" if method == "db_table" else f"{model}.objects.{method}(...)")
        for module, function, model, method, line in hand_filters()
        if (module, function, model) not in ALLOWED
    ]

    assert offenders == [], "Read through visible_to / administered_by:\n" + "\n".join(offenders)


def test_every_allowed_hand_filter_still_exists():
    """An entry whose code is gone (or moved) must leave the list, which stays short."""
    present = {(module, function, model) for module, function, model, _, _ in hand_filters()}

    assert sorted(set(ALLOWED) - present) == []


def test_the_inspection_sees_hand_filters(tmp_path):
    source = (
        "def leaky(subscription):\n"
        "    rows = DailyUsage.objects.filter(subscription=subscription)\n"
        "    scoped = DailyUsage.objects.visible_to(user).filter(subscription=subscription)\n"
        "    raw = f'SELECT * FROM {DailyUsage._meta.db_table}'\n"
        "    return type(rows)._default_manager.all()\n"
    )
    finder = HandFilters({"DailyUsage"})
    finder.visit(ast.parse(source))

    assert [(function, model, method) for function, model, method, _ in finder.found] == [
        ("leaky", "DailyUsage", "filter"),
        ("leaky", "DailyUsage", "db_table"),
        ("leaky", "?", "all"),
    ]
