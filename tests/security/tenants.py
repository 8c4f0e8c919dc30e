"""Two tenants for the isolation tests: Acme (whose people probe) and Globex (whose data must
never reach them).

Everything Globex owns carries a marker a response can be searched for: names start with
``GLOBEX-SECRET-``, its EnvironmentId and API key prefix are known, and its main objects have
nine-digit ids (``987654301`` ...) that no other row, timestamp or token contains by chance.
Usage is recorded through the recording service, so ledger, rollups, periods, threshold
alerts and the audit trail hold what production would hold.
"""

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth.hashers import make_password
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.audit import AuditEvent
from accounts.models import ApiKey, Environment, Project, Role, Subscription, Team, User
from credits.grants import adjust_grant
from credits.limits import set_team_limit, set_user_limit
from credits.models import (
    Agent,
    AlertRule,
    BillingPeriod,
    CreditEvent,
    CreditGrant,
    CreditLimit,
    GrantAdjustment,
    PlanPrice,
    SubscriptionPrice,
    ThresholdAlert,
    WebhookDelivery,
    WebhookEndpoint,
)
from credits.periods import period_bounds
from credits.recording import Usage, record_adjustment, record_usage
from tests import factories

MARK = "GLOBEX-SECRET-"
ID_BASE = 987_654_300


@dataclass
class Globex:
    subscription: Subscription
    sub_account: Subscription
    project: Project
    environment: Environment
    admin: User
    manager: User
    member: User
    team: Team
    agent: Agent
    user_limit: CreditLimit
    team_limit: CreditLimit
    api_key: ApiKey
    key_secret: str
    period: BillingPeriod
    event: CreditEvent
    adjustment: CreditEvent
    alert: ThresholdAlert
    audit_event: AuditEvent
    token: Token
    schedule: object  # reports.models.ReportSchedule
    webhook_endpoint: WebhookEndpoint
    webhook_delivery: WebhookDelivery
    alert_rule: AlertRule
    managers_alert_rule: AlertRule  # the Globex manager's, on their environment
    plan_price: PlanPrice
    subscription_price: SubscriptionPrice
    grant: CreditGrant
    grant_adjustment: GrantAdjustment
    delivery: object
    unsubscribe_token: str
    export_path: str  # a large export written to storage, as a worker writes it
    markers: dict[str, str]


@dataclass
class Tenants:
    # Acme: the people who probe.
    acme: Subscription
    acme_environment: Environment
    acme_admin: User
    acme_manager: User
    acme_member: User
    acme_key_secret: str
    # Globex: what must stay invisible to them.
    globex: Globex | None = None
    staff: User | None = None
    clients: dict = field(default_factory=dict)

    def markers(self) -> dict[str, str]:
        return self.globex.markers


def _user(pk: int, email: str, name: str) -> User:
    return User.objects.create(
        pk=pk, email=email, display_name=name, password=make_password(factories.PASSWORD)
    )


def build_globex(product, staff) -> Globex:
    subscription = Subscription.objects.create(
        pk=ID_BASE + 1,
        name=f"{MARK}SUBSCRIPTION",
        plan=Subscription.Plan.PRO,
        timezone="America/New_York",
        base_allocation=Decimal("1000"),
    )
    sub_account = Subscription.objects.create(
        pk=ID_BASE + 2, name=f"{MARK}SUB-ACCOUNT", parent=subscription, plan="pro"
    )
    product.enabled_for.add(subscription, sub_account)
    project = Project.objects.create(pk=ID_BASE + 3, subscription=subscription, name=f"{MARK}PRJ")
    environment = Environment.objects.create(pk=ID_BASE + 4, project=project, name=f"{MARK}ENV")
    admin = _user(ID_BASE + 5, "globex-secret-admin@globex.example", f"{MARK}ADMIN-NAME")
    manager = _user(ID_BASE + 6, "globex-secret-manager@globex.example", f"{MARK}MANAGER-NAME")
    member = _user(ID_BASE + 7, "globex-secret-member@globex.example", f"{MARK}MEMBER-NAME")
    factories.membership(admin, Role.SUBSCRIPTION_ADMIN, subscription=subscription)
    factories.membership(manager, Role.PROJECT_MANAGER, environment=environment)
    factories.membership(member, Role.MEMBER, environment=environment)
    team = Team.objects.create(pk=ID_BASE + 8, subscription=subscription, name=f"{MARK}TEAM")
    factories.team_membership(member, team)
    agent = Agent.objects.create(
        pk=ID_BASE + 9,
        subscription=subscription,
        name=f"{MARK}AGENT",
        agent_type="globex-secret-type",
        model=f"{MARK}MODEL",
        created_by=admin,
    )
    user_limit = CreditLimit.objects.create(
        pk=ID_BASE + 10, subscription=subscription, user=member, credits=Decimal("5000")
    )
    team_limit = CreditLimit.objects.create(
        pk=ID_BASE + 11, subscription=subscription, team=team, credits=Decimal("5000")
    )
    # Changed through the services, so that the audit trail has Globex rows.
    set_user_limit(subscription=subscription, user=member, credits=Decimal("4000"), actor=admin)
    set_team_limit(subscription=subscription, team=team, credits=Decimal("4500"), actor=admin)
    api_key, key_secret = factories.api_key(subscription, name=f"{MARK}KEY")
    bounds = period_bounds(timezone.now(), subscription.zone)
    period = BillingPeriod.objects.create(
        pk=ID_BASE + 12, subscription=subscription, start=bounds.start, end=bounds.end
    )
    # A month long closed, which has a statement.
    closed = period_bounds(bounds.start - timedelta(days=40), subscription.zone)
    BillingPeriod.objects.create(
        pk=ID_BASE + 18, subscription=subscription, start=closed.start, end=closed.end
    )
    common = {
        "environment": environment.public_id,
        "product": product.slug,
        "feature": f"{MARK}FEATURE",
        "agent": f"{MARK}AGENT",
        "model": f"{MARK}MODEL",
        "session_id": f"{MARK}SESSION",
    }
    event = record_usage(
        api_key=api_key,
        usage=Usage(
            idempotency_key=f"{MARK}IDEMPOTENCY-1",
            user=member.email,
            credits=Decimal("850"),  # crosses 80%: a threshold alert
            **common,
        ),
    ).event
    record_usage(
        api_key=api_key,
        usage=Usage(idempotency_key=f"{MARK}IDEMPOTENCY-2", credits=Decimal("7"), **common),
    )
    adjustment = record_adjustment(
        subscription=subscription,
        credits=Decimal("-1"),
        reason=f"{MARK}REASON",
        created_by=staff,
        environment=environment,
    )
    token = Token.objects.create(user=admin)
    schedule, delivery, unsubscribe_token = _schedule(subscription, admin)
    export_path = _large_export(subscription, admin)
    webhook_endpoint, webhook_delivery, alert_rule = _alerts(subscription, team, period)
    managers_alert_rule = _alert_rule(
        subscription,
        17,
        "MANAGER-RULE",
        target=AlertRule.Target.ENVIRONMENT,
        environment=environment,
        budget=Decimal("100"),
        email_admins=False,
        email_addresses=[manager.email],
        owner=manager,
    )
    plan_price, subscription_price, grant, grant_adjustment = _money(subscription, admin, staff)
    names = [
        "ENDPOINT",
        "RULE",
        "MANAGER-RULE",
        "SUBSCRIPTION",
        "SUB-ACCOUNT",
        "PRJ",
        "ENV",
        "ADMIN-NAME",
        "MANAGER-NAME",
        "MEMBER-NAME",
        "TEAM",
        "AGENT",
        "MODEL",
        "FEATURE",
        "SESSION",
        "IDEMPOTENCY-1",
        "IDEMPOTENCY-2",
        "KEY",
        "REASON",
        "SCHEDULE",
    ]
    markers = {
        "names": MARK,
        **{f"name {name}": f"{MARK}{name}" for name in names},
        "environment id": str(environment.public_id),
        "environment id (hex)": environment.public_id.hex,
        "API key prefix": api_key.prefix,
        "admin email": admin.email,
        "manager email": manager.email,
        "member email": member.email,
        "token": token.key,
        **{f"id {pk}": str(pk) for pk in range(ID_BASE + 1, ID_BASE + 19)},
    }
    return Globex(
        subscription=subscription,
        sub_account=sub_account,
        project=project,
        environment=environment,
        admin=admin,
        manager=manager,
        member=member,
        team=team,
        agent=agent,
        user_limit=user_limit,
        team_limit=team_limit,
        api_key=api_key,
        key_secret=key_secret,
        period=period,
        event=event,
        adjustment=adjustment,
        alert=ThresholdAlert.objects.get(subscription=subscription),
        audit_event=AuditEvent.objects.filter(subscription=subscription).first(),
        token=token,
        schedule=schedule,
        webhook_endpoint=webhook_endpoint,
        webhook_delivery=webhook_delivery,
        alert_rule=alert_rule,
        managers_alert_rule=managers_alert_rule,
        plan_price=plan_price,
        subscription_price=subscription_price,
        grant=grant,
        grant_adjustment=grant_adjustment,
        delivery=delivery,
        unsubscribe_token=unsubscribe_token,
        export_path=export_path,
        markers=markers,
    )


def _alerts(subscription, team, period):
    """A webhook endpoint of Globex's, one delivery to it, and an alert rule for its team."""
    endpoint = WebhookEndpoint.objects.create(
        pk=ID_BASE + 14,
        subscription=subscription,
        name=f"{MARK}ENDPOINT",
        url="https://hooks.globex.example/creditdesk",
        secret="whsec_globex-secret-signing-key",
    )
    delivery = WebhookDelivery.objects.create(
        pk=ID_BASE + 15,
        subscription=subscription,
        endpoint=endpoint,
        event_id=uuid.uuid4(),
        event_type="threshold.crossed",
        payload={"summary": f"{MARK}ENDPOINT"},
        created_at=timezone.now(),
        next_attempt_at=timezone.now(),
    )
    target = AlertRule.Target.TEAM
    rule = _alert_rule(subscription, 16, "RULE", target=target, team=team, webhook=endpoint)
    return endpoint, delivery, rule


def _money(subscription, admin, staff):
    """The Pro plan's price (shared by every subscription), Globex's own price, a grant of
    Globex's and an adjustment of it (audited as Globex's)."""
    euros = {"currency": "EUR", "excess_price": Decimal("0.02"), "created_by": staff}
    plan_price = PlanPrice.objects.create(
        plan="pro", credit_price=Decimal("0.01"), effective_from=timezone.now(), **euros
    )
    subscription_price = SubscriptionPrice.objects.create(
        pk=ID_BASE + 17,
        subscription=subscription,
        credit_price=Decimal("0.009"),
        effective_from=timezone.now(),
        **euros,
    )
    grant = CreditGrant.objects.create(
        pk=ID_BASE + 18,
        subscription=subscription,
        kind=CreditGrant.Kind.TOP_UP,
        credits=Decimal("300"),
        price=Decimal("2.70"),
        currency="EUR",
        effective_at=timezone.now(),
        reason=f"{MARK}REASON",
        created_by=admin,
    )
    adjustment = adjust_grant(
        grant=grant, credits=Decimal("-1"), reason=f"{MARK}REASON", created_by=admin
    )
    return plan_price, subscription_price, grant, adjustment


def _alert_rule(subscription, number: int, name: str, **fields) -> AlertRule:
    """A marked rule at 50%, with a fixed id (``ID_BASE + number``)."""
    return AlertRule.objects.create(
        pk=ID_BASE + number,
        subscription=subscription,
        name=f"{MARK}{name}",
        thresholds=[50],
        **fields,
    )


def _large_export(subscription, admin) -> str:
    from reports.large_exports import ExportRequest, write_and_deliver

    return write_and_deliver(
        ExportRequest(
            user_id=admin.pk,
            scope="subscription",
            subscription_id=subscription.pk,
            environment_id=None,
            as_of=timezone.now().isoformat(),
            export_id=f"isolation-test-{uuid.uuid4().hex}",  # one per test process
        )
    )


def _schedule(subscription, owner):
    """A weekly report of Globex's, one delivery of it, and a recipient who unsubscribed."""
    from datetime import date

    from reports.models import Delivery, ReportSchedule, Unsubscribe
    from reports.unsubscribe import unsubscribe_token

    recipient = "globex-secret-recipient@globex.example"
    schedule = ReportSchedule.objects.create(
        pk=ID_BASE + 13,
        subscription=subscription,
        created_by=owner,
        name=f"{MARK}SCHEDULE",
        recipients=[recipient, owner.email],
    )
    delivery = Delivery.objects.create(
        schedule=schedule,
        period_start=date(2026, 11, 2),
        period_end=date(2026, 11, 8),
        recipient=recipient,
        status=Delivery.Status.SENT,
    )
    Unsubscribe.objects.create(schedule=schedule, email=owner.email)
    return schedule, delivery, unsubscribe_token(schedule_id=schedule.pk, email=recipient)


def build_acme(product) -> Tenants:
    acme = factories.SubscriptionFactory(name="Acme", base_allocation=Decimal("1000"))
    product.enabled_for.add(acme)
    environment = factories.EnvironmentFactory(
        project=factories.ProjectFactory(subscription=acme, name="Website"), name="Production"
    )
    admin = factories.UserFactory(email="alice@acme.example", display_name="Alice")
    manager = factories.UserFactory(email="bob@acme.example", display_name="Bob")
    member = factories.UserFactory(email="carol@acme.example", display_name="Carol")
    factories.membership(admin, Role.SUBSCRIPTION_ADMIN, subscription=acme)
    factories.membership(manager, Role.PROJECT_MANAGER, environment=environment)
    factories.membership(member, Role.MEMBER, environment=environment)
    team = factories.TeamFactory(subscription=acme, name="Writers")
    factories.team_membership(member, team)
    set_user_limit(subscription=acme, user=member, credits=Decimal("500"), actor=admin)
    api_key, secret = factories.api_key(acme, name="Acme backend")
    for number, (user, credits) in enumerate([(member, "3"), (manager, "4"), (admin, "5")]):
        record_usage(
            api_key=api_key,
            usage=Usage(
                idempotency_key=f"acme-{number}",
                environment=environment.public_id,
                product=product.slug,
                user=user.email,
                agent="Support bot",
                model="gpt-5-mini",
                feature="chat",
                credits=Decimal(credits),
            ),
        )
    return Tenants(
        acme=acme,
        acme_environment=environment,
        acme_admin=admin,
        acme_manager=manager,
        acme_member=member,
        acme_key_secret=secret,
    )


def build_tenants() -> Tenants:
    product = factories.ProductFactory(slug="ai-agent", name="AI agent")
    tenants = build_acme(product)
    tenants.staff = User.objects.create_superuser("root@platform.example", factories.PASSWORD)
    tenants.globex = build_globex(product, tenants.staff)
    tenants.clients = _clients(tenants)
    return tenants


def _session(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def _with_header(header: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def _clients(tenants: Tenants) -> dict[str, APIClient]:
    globex = tenants.globex
    acme_token = Token.objects.create(user=tenants.acme_admin)
    return {
        # Acme's people and machines: what they get must hold nothing of Globex.
        "anonymous": APIClient(),
        "member": _session(tenants.acme_member),
        "manager": _session(tenants.acme_manager),
        "admin": _session(tenants.acme_admin),
        "admin token": _with_header(f"Token {acme_token.key}"),
        "API key": _with_header(f"Api-Key {tenants.acme_key_secret}"),
        # Who may see Globex's data: the twins that prove each probe reaches it.
        "staff": _session(tenants.staff),
        "globex admin": _session(globex.admin),
        "globex manager": _session(globex.manager),
        "globex member": _session(globex.member),
        "globex admin token": _with_header(f"Token {globex.token.key}"),
        "globex API key": _with_header(f"Api-Key {globex.key_secret}"),
    }


def globex_state(globex: Globex) -> dict:
    """Everything of Globex a write could change, to compare before and after the probes."""
    from accounts.models import Membership, TeamMembership
    from credits.models import DailyUsage, IdempotencyRecord

    subscriptions = [globex.subscription.pk, globex.sub_account.pk]
    users = [globex.admin.pk, globex.manager.pk, globex.member.pk]

    def rows(queryset, *fields):
        return sorted(map(repr, queryset.values_list(*fields)))

    def kept(model, *fields):
        return rows(model.objects.filter(subscription__in=subscriptions), *fields)

    return {
        "subscriptions": rows(
            Subscription.objects.filter(pk__in=subscriptions),
            "pk",
            "name",
            "plan",
            "timezone",
            "base_allocation",
            "limit_mode",
            "excess_allowance",
            "parent",
        ),
        "children": rows(Subscription.objects.filter(parent__in=subscriptions), "pk"),
        "projects": kept(Project, "pk", "name"),
        "environments": rows(
            Environment.objects.filter(project__subscription__in=subscriptions),
            "pk",
            "name",
            "project",
        ),
        "memberships": kept(Membership, "pk", "user", "role", "environment"),
        "users": rows(
            User.objects.filter(pk__in=users),
            "email",
            "display_name",
            "password",
            "is_active",
            "is_staff",
            "is_superuser",
        ),
        "teams": kept(Team, "pk", "name"),
        "team members": kept(TeamMembership, "team", "user"),
        "api keys": kept(ApiKey, "pk", "name", "revoked", "environment", "credit_budget"),
        "agents": kept(Agent, "pk", "name", "agent_type"),
        "limits": kept(CreditLimit, "pk", "user", "team", "credits"),
        "periods": kept(BillingPeriod, "pk", "credits_used", "excess_used"),
        "ledger": kept(CreditEvent, "pk", "credits"),
        "rollups": kept(DailyUsage, "pk", "credits", "runs"),
        "idempotency": kept(IdempotencyRecord, "key", "event"),
        "alerts": kept(ThresholdAlert, "pk", "notified_at"),
        "audit": kept(AuditEvent, "pk"),
        "webhook endpoints": kept(WebhookEndpoint, "pk", "name", "url", "secret", "enabled"),
        "webhook deliveries": kept(WebhookDelivery, "pk", "status", "attempts", "next_attempt_at"),
        "alert rules": kept(
            AlertRule,
            "pk",
            "name",
            "thresholds",
            "enabled",
            "webhook",
            "environment",
            "budget",
            "email_addresses",
            "owner",
        ),
        "subscription prices": kept(SubscriptionPrice, "pk", "credit_price"),
        "grants": kept(
            CreditGrant, "pk", "credits", "credits_used", "credits_adjusted", "credits_lapsed"
        ),
        "grant adjustments": kept(GrantAdjustment, "pk", "credits"),
        "tokens": rows(Token.objects.filter(user__in=users), "key"),
        **_schedule_state(subscriptions),
    }


def _schedule_state(subscriptions) -> dict:
    from reports.models import Delivery, ReportSchedule, Unsubscribe

    schedules = ReportSchedule.objects.filter(subscription__in=subscriptions)
    return {
        "schedules": sorted(
            map(
                repr,
                schedules.values_list(
                    "pk", "name", "enabled", "recipients", "scope", "environment", "created_by"
                ),
            )
        ),
        "deliveries": sorted(
            map(repr, Delivery.objects.filter(schedule__in=schedules).values_list("pk", "status"))
        ),
        "unsubscribes": sorted(
            map(repr, Unsubscribe.objects.filter(schedule__in=schedules).values_list("email"))
        ),
    }
