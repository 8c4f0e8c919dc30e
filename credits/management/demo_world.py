"""The demo world, declared as data and built idempotently: who exists and where they work.

Every builder looks its object up first and creates it only when it is missing, counting what
it created so that ``seed_demo`` can say whether a run changed anything.
"""

import hashlib
import hmac
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password

from accounts.models import (
    ApiKey,
    Environment,
    Membership,
    Project,
    Role,
    Subscription,
    Team,
    TeamMembership,
    User,
)
from accounts.services import add_membership, revoke_api_key
from credits.models import (
    Agent,
    AlertRule,
    CreditGrant,
    CreditLimit,
    PlanPrice,
    Product,
    SubscriptionPrice,
)
from credits.periods import local_date

# Published in the README and printed by seed_demo: demo data only.
DEMO_PASSWORD = "demo-password"  # noqa: S105
STAFF_EMAIL = "staff@creditdesk.example"
DEMO_KEY_NAME = "Demo key"

ADMIN = Role.SUBSCRIPTION_ADMIN
MANAGER = Role.PROJECT_MANAGER
MEMBER = Role.MEMBER

PRODUCTS = {
    "ai-agent": "AI agent",
    "expert-agents": "Expert agents",
    "writing-assistant": "Writing assistant",
    "translation": "Translation",
    "api": "API",
}


@dataclass(frozen=True)
class UsageShape:
    """How much of the base allocation a subscription uses per month, growing over the year."""

    utilisation_first_month: float
    utilisation_last_month: float
    api_key_share: float
    peak_months_ago: int | None = None  # a busy month that runs into the limit


@dataclass(frozen=True)
class SubscriptionSpec:
    name: str
    plan: str
    timezone: str
    base_allocation: Decimal
    limit_mode: str
    excess_allowance: Decimal
    products: tuple[str, ...]
    projects: dict[str, tuple[str, ...]]  # project name -> environment names
    usage: UsageShape
    parent: str | None = None


@dataclass(frozen=True)
class RoleSpec:
    subscription: str
    role: str
    environment: str | None = None  # "Project / Environment"


@dataclass(frozen=True)
class PersonSpec:
    email: str
    name: str
    roles: tuple[RoleSpec, ...] = ()
    activity: float = 0.0  # relative share of the AI runs in their subscriptions
    superuser: bool = False


@dataclass(frozen=True)
class KeySpec:
    subscription: str
    name: str
    environment: str | None = None
    activity: float = 1.0
    active_until: float = 1.0  # fraction of the demo history after which the key goes quiet
    revoked: bool = False


@dataclass(frozen=True)
class AgentSpec:
    subscription: str
    name: str
    agent_type: str
    model: str
    product: str
    feature: str
    created_by: str
    # How far into the demo history (0 to 1) its creator added it: people add agents over
    # the year, so the agents created in a past month show in that month's reports.
    created_after: float = 0.0


SUBSCRIPTIONS = (
    SubscriptionSpec(
        name="Acme Corp",
        plan=Subscription.Plan.PRO,
        timezone="Europe/Prague",
        base_allocation=Decimal(60_000),
        limit_mode=Subscription.LimitMode.SOFT,
        excess_allowance=Decimal(15_000),
        products=("ai-agent", "expert-agents", "writing-assistant", "api"),
        projects={
            "Website": ("Production", "Staging"),
            "Mobile app": ("Production", "Development"),
            "Help center": ("Production",),
        },
        usage=UsageShape(0.70, 1.10, api_key_share=0.12, peak_months_ago=2),
    ),
    SubscriptionSpec(
        name="Acme Labs",
        plan=Subscription.Plan.PREMIUM,
        timezone="Europe/Prague",
        base_allocation=Decimal(20_000),
        limit_mode=Subscription.LimitMode.HARD,
        excess_allowance=Decimal(0),
        products=("ai-agent", "expert-agents", "writing-assistant", "translation"),
        projects={"Research": ("Production", "Sandbox")},
        usage=UsageShape(0.45, 0.85, api_key_share=0.15),
        parent="Acme Corp",
    ),
    SubscriptionSpec(
        name="Globex",
        plan=Subscription.Plan.FREE,
        timezone="America/New_York",
        base_allocation=Decimal(8_000),
        limit_mode=Subscription.LimitMode.HARD,
        excess_allowance=Decimal(0),
        products=("ai-agent", "writing-assistant", "api"),
        projects={"Intranet": ("Production", "Staging"), "Marketing site": ("Production",)},
        usage=UsageShape(0.90, 1.25, api_key_share=0.10),
    ),
)

PEOPLE = (
    PersonSpec(STAFF_EMAIL, "Platform Staff", superuser=True),
    PersonSpec(
        "alice@acme.example",
        "Alice Novak",
        (
            RoleSpec("Acme Corp", ADMIN),
            RoleSpec("Acme Corp", MEMBER, "Website / Production"),
        ),
        activity=0.5,
    ),
    PersonSpec(
        "bob@acme.example",
        "Bob Dvořák",
        (
            RoleSpec("Acme Corp", MANAGER, "Website / Production"),
            RoleSpec("Acme Corp", MEMBER, "Mobile app / Production"),
        ),
        activity=1.0,
    ),
    PersonSpec(
        "priya@acme.example",
        "Priya Shah",
        (
            RoleSpec("Acme Corp", MANAGER, "Mobile app / Production"),
            RoleSpec("Acme Corp", MANAGER, "Mobile app / Development"),
        ),
        activity=0.8,
    ),
    PersonSpec(
        "carol@acme.example",
        "Carol Svobodová",
        (
            RoleSpec("Acme Corp", MEMBER, "Website / Production"),
            RoleSpec("Acme Corp", MEMBER, "Help center / Production"),
            RoleSpec("Acme Labs", MEMBER, "Research / Sandbox"),
        ),
        activity=1.4,
    ),
    PersonSpec(
        "dave@acme.example",
        "Dave Horák",
        (
            RoleSpec("Acme Corp", MEMBER, "Website / Production"),
            RoleSpec("Acme Corp", MEMBER, "Website / Staging"),
        ),
        activity=1.0,
    ),
    PersonSpec(
        "erin@acme.example",
        "Erin Králová",
        (RoleSpec("Acme Corp", MEMBER, "Help center / Production"),),
        activity=1.2,
    ),
    PersonSpec(
        "frank@acme.example",
        "Frank Marek",
        (
            RoleSpec("Acme Corp", MEMBER, "Mobile app / Production"),
            RoleSpec("Acme Corp", MEMBER, "Mobile app / Development"),
        ),
        activity=0.9,
    ),
    PersonSpec(
        "grace@acme.example",
        "Grace Procházková",
        (RoleSpec("Acme Corp", MEMBER, "Website / Production"),),
        activity=0.9,
    ),
    PersonSpec(
        "lars@acme.example",
        "Lars Berg",
        (
            RoleSpec("Acme Labs", ADMIN),
            RoleSpec("Acme Labs", MANAGER, "Research / Production"),
        ),
        activity=0.8,
    ),
    PersonSpec(
        "mia@acme.example",
        "Mia Čermáková",
        (
            RoleSpec("Acme Labs", MEMBER, "Research / Production"),
            RoleSpec("Acme Labs", MEMBER, "Research / Sandbox"),
        ),
        activity=1.3,
    ),
    PersonSpec("hank@globex.example", "Hank Scorpio", (RoleSpec("Globex", ADMIN),)),
    PersonSpec(
        "ivy@globex.example",
        "Ivy Chen",
        (
            RoleSpec("Globex", MANAGER, "Intranet / Production"),
            RoleSpec("Globex", MEMBER, "Marketing site / Production"),
        ),
        activity=1.0,
    ),
    PersonSpec(
        "judy@globex.example",
        "Judy Park",
        (
            RoleSpec("Globex", MEMBER, "Intranet / Production"),
            RoleSpec("Globex", MEMBER, "Intranet / Staging"),
        ),
        activity=1.2,
    ),
    PersonSpec(
        "ken@globex.example",
        "Ken Adams",
        (RoleSpec("Globex", MEMBER, "Marketing site / Production"),),
        activity=0.8,
    ),
    PersonSpec(
        "luis@globex.example",
        "Luis Ortega",
        (RoleSpec("Globex", MEMBER, "Intranet / Production"),),
        activity=0.6,
    ),
)

TEAMS = {
    "Acme Corp": {
        "Content": ("carol@acme.example", "erin@acme.example", "grace@acme.example"),
        "Engineering": (
            "bob@acme.example",
            "dave@acme.example",
            "frank@acme.example",
            "priya@acme.example",
        ),
    },
    "Acme Labs": {"Research": ("lars@acme.example", "mia@acme.example")},
    "Globex": {
        "Operations": ("judy@globex.example", "luis@globex.example"),
        "Marketing": ("ivy@globex.example", "ken@globex.example"),
    },
}

# Per-period caps: the Content team and one member of Acme Corp have their own limits.
TEAM_LIMITS = {("Acme Corp", "Content"): Decimal(30_000)}
USER_LIMITS = {("Acme Corp", "grace@acme.example"): Decimal(4_500)}

# An alert rule per team (name -> thresholds in percent), emailing the subscription's admins;
# webhook and Slack endpoints are added to it by whoever runs a receiver (README, "Alerts and
# webhooks").
# The price list, set by platform staff: per base credit and per excess credit, in euros,
# from the start of the demo's history. Every plan has one (the free plan's is zero).
DEMO_CURRENCY = "EUR"
PLAN_PRICES = {
    Subscription.Plan.FREE: (Decimal("0"), Decimal("0")),
    Subscription.Plan.PRO: (Decimal("0.002"), Decimal("0.003")),
    Subscription.Plan.PREMIUM: (Decimal("0.0018"), Decimal("0.0027")),
    Subscription.Plan.SCALE: (Decimal("0.0015"), Decimal("0.0022")),
}
# A negotiated price for one subscription, overriding its plan's.
SUBSCRIPTION_PRICES = {"Acme Labs": (Decimal("0.0016"), Decimal("0.0024"))}


@dataclass(frozen=True)
class GrantSpec:
    subscription: str
    kind: str
    credits: Decimal
    price: Decimal  # the total paid, in DEMO_CURRENCY
    expires_after: timedelta | None
    reason: str


# Credits added to Acme Corp when the demo is seeded (usable from then on): a purchased top-up
# that expires, and a bonus that does not.
GRANTS = (
    GrantSpec(
        "Acme Corp",
        "top_up",
        Decimal(10_000),
        Decimal("18.00"),
        timedelta(days=90),
        "Top-up bought for the product launch",
    ),
    GrantSpec("Acme Corp", "bonus", Decimal(2_000), Decimal(0), None, "Welcome bonus"),
)

TEAM_ALERT_RULES = {("Acme Corp", "Content"): ("Content at half its limit", (Decimal(50),))}

API_KEYS = (
    KeySpec("Acme Corp", DEMO_KEY_NAME, activity=1.0),
    KeySpec("Acme Corp", "CMS integration", "Website / Production", activity=1.5),
    KeySpec("Acme Corp", "Legacy importer", activity=0.8, active_until=0.4, revoked=True),
    KeySpec("Acme Labs", DEMO_KEY_NAME, activity=1.0),
    KeySpec("Globex", DEMO_KEY_NAME, activity=0.6),
    KeySpec("Globex", "Nightly sync", "Intranet / Production", activity=1.0),
)

AGENTS = (
    AgentSpec(
        "Acme Corp",
        "Blog post drafter",
        "multi_step",
        "claude-sonnet-4-5",
        "ai-agent",
        "generate-content",
        "carol@acme.example",
    ),
    AgentSpec(
        "Acme Corp",
        "SEO meta writer",
        "single_task",
        "gpt-5-mini",
        "ai-agent",
        "generate-content",
        "dave@acme.example",
        created_after=0.25,
    ),
    AgentSpec(
        "Acme Corp",
        "Support assistant",
        "chat",
        "gpt-5",
        "ai-agent",
        "chat",
        "erin@acme.example",
        created_after=0.45,
    ),
    AgentSpec(
        "Acme Corp",
        "Release notes summarizer",
        "single_task",
        "gpt-5-mini",
        "ai-agent",
        "summarize",
        "frank@acme.example",
        created_after=0.7,
    ),
    AgentSpec(
        "Acme Corp",
        "Content auditor",
        "multi_step",
        "gemini-2.5-pro",
        "expert-agents",
        "content-audit",
        "bob@acme.example",
    ),
    AgentSpec(
        "Acme Corp",
        "Brand voice checker",
        "single_task",
        "claude-sonnet-4-5",
        "expert-agents",
        "brand-check",
        "grace@acme.example",
        created_after=0.96,
    ),
    AgentSpec(
        "Acme Labs",
        "Research assistant",
        "multi_step",
        "gpt-5",
        "ai-agent",
        "summarize",
        "mia@acme.example",
        created_after=0.05,
    ),
    AgentSpec(
        "Acme Labs",
        "Lab notebook chat",
        "chat",
        "claude-haiku-4-5",
        "ai-agent",
        "chat",
        "lars@acme.example",
        created_after=0.6,
    ),
    AgentSpec(
        "Acme Labs",
        "Paper reviewer",
        "multi_step",
        "gemini-2.5-pro",
        "expert-agents",
        "content-audit",
        "mia@acme.example",
    ),
    AgentSpec(
        "Globex",
        "Intranet helper",
        "chat",
        "gpt-5-mini",
        "ai-agent",
        "chat",
        "judy@globex.example",
        created_after=0.1,
    ),
    AgentSpec(
        "Globex",
        "Newsletter writer",
        "multi_step",
        "claude-sonnet-4-5",
        "ai-agent",
        "generate-content",
        "ken@globex.example",
        created_after=0.8,
    ),
)


def demo_key_secret(subscription_name: str, key_name: str) -> str:
    """A stable API key secret, so that the demo can print it on every run.

    Derived from ``SECRET_KEY``: it is only as secret as that, which is fine for demo data.
    """
    message = f"creditdesk demo API key\n{subscription_name}\n{key_name}".encode()
    digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()
    return f"{digest[:8]}.{digest[8:40]}"


@dataclass
class DemoWorld:
    """The built objects, looked up by the names used in the specs above."""

    products: dict[str, Product] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    environments: dict[tuple[str, str], Environment] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    teams: dict[tuple[str, str], Team] = field(default_factory=dict)
    api_keys: dict[tuple[str, str], ApiKey] = field(default_factory=dict)
    agents: dict[tuple[str, str], Agent] = field(default_factory=dict)
    created: Counter = field(default_factory=Counter)

    def environment(self, subscription: str, path: str) -> Environment:
        return self.environments[subscription, path]


def build_world(*, joined_at: datetime, now: datetime) -> DemoWorld:
    """Everyone joined at ``joined_at``; agents are added between then and ``now``."""
    world = DemoWorld()
    _build_products(world)
    for spec in SUBSCRIPTIONS:
        _build_subscription(world, spec)
    _build_people(world, joined_at=joined_at)
    _build_teams(world)
    _build_limits(world)
    _build_alert_rules(world)
    _build_api_keys(world)
    _build_agents(world, joined_at=joined_at, now=now)
    _build_prices(world, since=joined_at)
    _build_grants(world, now=now)
    return world


def _build_products(world: DemoWorld) -> None:
    for slug, name in PRODUCTS.items():
        product, created = Product.objects.get_or_create(slug=slug, defaults={"name": name})
        world.products[slug] = product
        world.created["products"] += created


def _build_subscription(world: DemoWorld, spec: SubscriptionSpec) -> None:
    parent = world.subscriptions[spec.parent] if spec.parent else None
    subscription = Subscription.objects.filter(name=spec.name, parent=parent).first()
    if subscription is None:
        subscription = Subscription(
            name=spec.name,
            plan=spec.plan,
            timezone=spec.timezone,
            base_allocation=spec.base_allocation,
            limit_mode=spec.limit_mode,
            excess_allowance=spec.excess_allowance,
            parent=parent,
        )
        subscription.full_clean()
        subscription.save()
        world.created["subscriptions"] += 1
    world.subscriptions[spec.name] = subscription

    enabled = set(subscription.enabled_products.values_list("slug", flat=True))
    missing = [world.products[slug] for slug in spec.products if slug not in enabled]
    subscription.enabled_products.add(*missing)
    world.created["enabled products"] += len(missing)

    for project_name, environment_names in spec.projects.items():
        project, created = Project.objects.get_or_create(
            subscription=subscription, name=project_name
        )
        world.created["projects"] += created
        for environment_name in environment_names:
            environment, created = Environment.objects.get_or_create(
                project=project, name=environment_name
            )
            world.created["environments"] += created
            world.environments[spec.name, f"{project_name} / {environment_name}"] = environment


def _build_people(world: DemoWorld, *, joined_at: datetime) -> None:
    password_hash = None  # hashing is slow on purpose: hash the shared password once
    for person in PEOPLE:
        user = User.objects.filter(email__iexact=person.email).first()
        if user is None:
            validate_password(DEMO_PASSWORD, User(email=person.email, display_name=person.name))
            password_hash = password_hash or make_password(DEMO_PASSWORD)
            user = User.objects.create(
                email=person.email,
                display_name=person.name,
                password=password_hash,
                is_superuser=person.superuser,
                is_staff=person.superuser,
                date_joined=joined_at,
            )
            world.created["users"] += 1
        world.users[person.email] = user
        for role in person.roles:
            _ensure_role(world, user, role)


def _ensure_role(world: DemoWorld, user: User, role: RoleSpec) -> None:
    subscription = world.subscriptions[role.subscription]
    environment = (
        world.environment(role.subscription, role.environment) if role.environment else None
    )
    existing = Membership.objects.filter(user=user, subscription=subscription)
    if environment is None:
        existing = existing.filter(role=ADMIN)
    else:
        existing = existing.filter(environment=environment)
    if not existing.exists():
        add_membership(
            user=user, subscription=subscription, role=role.role, environment=environment
        )
        world.created["roles"] += 1


def _build_teams(world: DemoWorld) -> None:
    for subscription_name, teams in TEAMS.items():
        subscription = world.subscriptions[subscription_name]
        for team_name, emails in teams.items():
            team, created = Team.objects.get_or_create(subscription=subscription, name=team_name)
            world.teams[subscription_name, team_name] = team
            world.created["teams"] += created
            for email in emails:
                user = world.users[email]
                if not TeamMembership.objects.filter(subscription=subscription, user=user).exists():
                    TeamMembership.objects.create(team=team, user=user)
                    world.created["team members"] += 1


def _build_limits(world: DemoWorld) -> None:
    for (subscription_name, team_name), credits in TEAM_LIMITS.items():
        _, created = CreditLimit.objects.get_or_create(
            subscription=world.subscriptions[subscription_name],
            team=world.teams[subscription_name, team_name],
            defaults={"credits": credits},
        )
        world.created["limits"] += created
    for (subscription_name, email), credits in USER_LIMITS.items():
        _, created = CreditLimit.objects.get_or_create(
            subscription=world.subscriptions[subscription_name],
            user=world.users[email],
            defaults={"credits": credits},
        )
        world.created["limits"] += created


def _build_prices(world: DemoWorld, *, since: datetime) -> None:
    """The plans' prices and the overrides, from ``since`` (before any seeded usage), each
    unless its plan or subscription has a price already."""
    owners = [(PlanPrice, {"plan": plan}, prices) for plan, prices in PLAN_PRICES.items()]
    owners += [
        (SubscriptionPrice, {"subscription": world.subscriptions[name]}, prices)
        for name, prices in SUBSCRIPTION_PRICES.items()
    ]
    for model, owner, (credit_price, excess_price) in owners:
        if not model.objects.filter(**owner).exists():
            model.objects.create(
                **owner,
                currency=DEMO_CURRENCY,
                credit_price=credit_price,
                excess_price=excess_price,
                effective_from=since,
                created_by=world.users[STAFF_EMAIL],
            )
            world.created["prices"] += 1


def _build_grants(world: DemoWorld, *, now: datetime) -> None:
    """The grants, usable from ``now`` on (the seeded usage before it draws none of them),
    unless the subscription has grants already."""
    for name in dict.fromkeys(spec.subscription for spec in GRANTS):
        subscription = world.subscriptions[name]
        if CreditGrant.objects.filter(subscription=subscription).exists():
            continue
        for spec in (spec for spec in GRANTS if spec.subscription == name):
            CreditGrant.objects.create(
                subscription=subscription,
                kind=spec.kind,
                credits=spec.credits,
                price=spec.price,
                currency=DEMO_CURRENCY,
                effective_at=now,
                expires_at=now + spec.expires_after if spec.expires_after else None,
                reason=spec.reason,
                created_by=world.users[STAFF_EMAIL],
            )
            world.created["grants"] += 1


def _build_alert_rules(world: DemoWorld) -> None:
    for (subscription_name, team_name), (name, thresholds) in TEAM_ALERT_RULES.items():
        _, created = AlertRule.objects.get_or_create(
            subscription=world.subscriptions[subscription_name],
            name=name,
            defaults={
                "target": AlertRule.Target.TEAM,
                "team": world.teams[subscription_name, team_name],
                "thresholds": list(thresholds),
            },
        )
        world.created["alert rules"] += created


def _build_api_keys(world: DemoWorld) -> None:
    for spec in API_KEYS:
        subscription = world.subscriptions[spec.subscription]
        secret = demo_key_secret(spec.subscription, spec.name)
        prefix, _, _ = secret.partition(".")
        api_key = ApiKey.objects.filter(prefix=prefix).first()
        if api_key is None:
            api_key = _create_key_with_secret(world, spec, secret)
            _revoke_keys_made_with_another_secret_key(subscription, spec.name, keep=api_key)
        world.api_keys[spec.subscription, spec.name] = api_key


def _create_key_with_secret(world: DemoWorld, spec: KeySpec, secret: str) -> ApiKey:
    """Store a key whose secret we chose, exactly as ``ApiKey.objects.assign_key`` would."""
    prefix, _, _ = secret.partition(".")
    hashed_key = ApiKey.objects.key_generator.hash(secret)
    environment = (
        world.environment(spec.subscription, spec.environment) if spec.environment else None
    )
    api_key = ApiKey(
        id=f"{prefix}.{hashed_key}",
        prefix=prefix,
        hashed_key=hashed_key,
        name=spec.name,
        subscription=world.subscriptions[spec.subscription],
        environment=environment,
        created_by=world.users[_first_admin_email(spec.subscription)],
    )
    api_key.full_clean(exclude=["id", "prefix", "hashed_key"])
    api_key.save(force_insert=True)
    world.created["API keys"] += 1
    if spec.revoked:
        revoke_api_key(api_key=api_key)
    return api_key


def _revoke_keys_made_with_another_secret_key(
    subscription: Subscription, name: str, *, keep: ApiKey
) -> None:
    """A changed ``SECRET_KEY`` changes the demo secrets: the old keys must stop working."""
    stale = ApiKey.objects.filter(subscription=subscription, name=name, revoked=False)
    for api_key in stale.exclude(pk=keep.pk):
        revoke_api_key(api_key=api_key)


def _first_admin_email(subscription_name: str) -> str:
    return next(
        person.email for person in PEOPLE if RoleSpec(subscription_name, ADMIN) in person.roles
    )


def _build_agents(world: DemoWorld, *, joined_at: datetime, now: datetime) -> None:
    for spec in AGENTS:
        subscription = world.subscriptions[spec.subscription]
        agent, created = Agent.objects.get_or_create(
            subscription=subscription,
            name=spec.name,
            defaults={
                "agent_type": spec.agent_type,
                "model": spec.model,
                "created_by": world.users[spec.created_by],
            },
        )
        if created:
            # created_at is set on creation (auto_now_add): backdate it.
            agent.created_at = agent_created_at(spec, subscription, joined_at=joined_at, now=now)
            Agent.objects.filter(pk=agent.pk).update(created_at=agent.created_at)
        world.agents[spec.subscription, spec.name] = agent
        world.created["agents"] += created


def agent_created_at(
    spec: AgentSpec, subscription: Subscription, *, joined_at: datetime, now: datetime
) -> datetime:
    """Mid-morning, local time, of the working day ``spec.created_after`` into the history
    (at the latest today, and never after ``now``)."""
    zone = subscription.zone
    first_day, today = local_date(joined_at, zone), local_date(now, zone)
    day = first_day + (today - first_day) * spec.created_after
    while day.weekday() >= 5 and day < today:  # people add agents on working days
        day += timedelta(days=1)
    return min(datetime.combine(day, time(10, 30), tzinfo=zone), now)
