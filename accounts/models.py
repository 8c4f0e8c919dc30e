"""Who: users, the subscriptions they belong to, where they work and what they may see."""

import uuid
import zoneinfo
from decimal import Decimal

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey, APIKeyManager

from core.money import CREDIT_DIGITS

from .scoping import (
    ApiKeyQuerySet,
    EnvironmentQuerySet,
    MembershipQuerySet,
    ProjectQuerySet,
    SubscriptionQuerySet,
    TeamMembershipQuerySet,
    TeamQuerySet,
    UserQuerySet,
)


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone name.", code="invalid_timezone")


class UserManager(BaseUserManager.from_queryset(UserQuerySet)):
    use_in_migrations = True

    def create_user(self, email, password=None, **extra_fields):
        if not email:
            raise ValueError("Users need an email address.")
        user = self.model(email=self.normalize_email(email), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, **extra_fields):
        extra_fields.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **extra_fields)

    def get_by_natural_key(self, email):
        return self.get(email__iexact=email)


class User(AbstractBaseUser, PermissionsMixin):
    """A person. Email is the login and is unique whatever its case."""

    email = models.EmailField("email address", max_length=254, unique=True)
    display_name = models.CharField(max_length=150, blank=True)
    is_staff = models.BooleanField(
        "admin site access",
        default=False,
        help_text="Set automatically for subscription admins; platform staff set it by hand.",
    )
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = []

    class Meta:
        ordering = ["email"]
        constraints = [
            models.UniqueConstraint(Lower("email"), name="user_email_ci_unique"),
        ]

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        return self.display_name or self.email

    def get_short_name(self) -> str:
        return self.display_name or self.email.split("@")[0]

    def clean(self) -> None:
        super().clean()
        self.email = type(self).objects.normalize_email(self.email)
        clash = type(self).objects.filter(email__iexact=self.email).exclude(pk=self.pk)
        if self.email and clash.exists():
            raise ValidationError({"email": "A user with this email address already exists."})


class Subscription(models.Model):
    """The paying organisation: its plan, time zone, monthly allocation and limit mode."""

    class Plan(models.TextChoices):
        FREE = "free", "Free"
        PRO = "pro", "Pro"
        PREMIUM = "premium", "Premium"
        SCALE = "scale", "Scale"

    class LimitMode(models.TextChoices):
        HARD = "hard", "Hard: block at 100% of the allocation"
        SOFT = "soft", "Soft: allow excess credits up to the allowance"

    name = models.CharField(max_length=200)
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.FREE)
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="IANA name, e.g. Europe/Prague. Billing periods are calendar months here.",
    )
    base_allocation = models.DecimalField(
        "base monthly allocation",
        **CREDIT_DIGITS,
        default=0,
        validators=[MinValueValidator(0)],
        help_text="Credits included each billing period.",
    )
    limit_mode = models.CharField(max_length=10, choices=LimitMode.choices, default=LimitMode.HARD)
    excess_allowance = models.DecimalField(
        **CREDIT_DIGITS,
        default=0,
        validators=[MinValueValidator(0)],
        help_text="Soft mode only: credits allowed beyond the base allocation each period.",
    )
    parent = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="sub_accounts",
        help_text="Set for a sub-account; its parent's admins see it too.",
        # Parent and sub-account are different tenants (on different nodes under Citus), so
        # the database keeps no key between them; clean() and PROTECT hold it.
        db_constraint=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SubscriptionQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(base_allocation__gte=0) & models.Q(excess_allowance__gte=0),
                name="subscription_allocations_not_negative",
            ),
            models.CheckConstraint(
                condition=~models.Q(parent=models.F("pk")), name="subscription_not_own_parent"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def has_team_views(self) -> bool:
        """Per-member views are a paid-plan feature."""
        return self.plan != self.Plan.FREE

    @property
    def credit_cap(self) -> Decimal:
        """The most credits a period may use: the allocation, plus the excess allowance in
        soft mode. Recording refuses an event that would go beyond it."""
        if self.limit_mode == self.LimitMode.SOFT:
            return self.base_allocation + self.excess_allowance
        return self.base_allocation

    def clean(self) -> None:
        if self.parent_id and self.parent_id == self.pk:
            raise ValidationError({"parent": "A subscription cannot be its own parent."})
        if self.parent and self.parent.parent_id:
            raise ValidationError({"parent": "Sub-accounts cannot have sub-accounts."})


class CopiesSubscription(models.Model):
    """A tenant row whose subscription is copied, on save, from the row it belongs to.

    Every tenant table carries its subscription (the distribution column under Citus; the
    database's keys include it, see the README's "Scaling out"), even where a parent names it.
    """

    subscription_from: str  # the foreign key whose subscription the row takes

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="+", editable=False, db_index=False
    )

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        self.subscription_id = getattr(self, self.subscription_from).subscription_id
        super().save(*args, **kwargs)


class NamedInSubscription(models.Model):
    """A part of a subscription known by a name unique in it (a project, a team). Each declares
    its own ``subscription`` (for its related name) and ``name``."""

    class Meta:
        abstract = True
        ordering = ["subscription__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "name"], name="%(class)s_name_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class Project(NamedInSubscription):
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="projects"
    )
    name = models.CharField(max_length=200)

    objects = ProjectQuerySet.as_manager()


class Environment(CopiesSubscription):
    subscription_from = "project"
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="environments", db_constraint=False
    )
    name = models.CharField(max_length=200)
    public_id = models.UUIDField("EnvironmentId", default=uuid.uuid4, db_index=True, editable=False)

    objects = EnvironmentQuerySet.as_manager()

    class Meta:
        ordering = ["project__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "project", "name"], name="environment_name_unique"
            ),
            models.UniqueConstraint(
                fields=["subscription", "public_id"], name="environment_public_id_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.name} / {self.name}"


def environment_key(*, related_name: str, help_text: str) -> models.ForeignKey:
    """An optional key to an environment of the row's own subscription: the database's key is
    (subscription, environment), so Django's own constraint is off."""
    return models.ForeignKey(
        Environment,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name=related_name,
        help_text=help_text,
        db_constraint=False,
    )


class Role(models.TextChoices):
    SUBSCRIPTION_ADMIN = "subscription_admin", "Subscription admin"
    PROJECT_MANAGER = "project_manager", "Project manager"
    MEMBER = "member", "Member"


class Membership(models.Model):
    """A role held by a user: subscription-wide (admin) or in one environment (manager, member)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="memberships"
    )
    environment = environment_key(
        related_name="memberships",
        help_text="Required for project managers and members; empty for subscription admins.",
    )
    role = models.CharField(max_length=30, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        ordering = ["subscription__name", "user__email"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(role=Role.SUBSCRIPTION_ADMIN, environment__isnull=True)
                    | (
                        ~models.Q(role=Role.SUBSCRIPTION_ADMIN)
                        & models.Q(environment__isnull=False)
                    )
                ),
                name="membership_environment_matches_role",
            ),
            models.UniqueConstraint(
                fields=["subscription", "user", "environment"],
                condition=models.Q(environment__isnull=False),
                name="membership_one_role_per_environment",
            ),
            models.UniqueConstraint(
                fields=["user", "subscription"],
                condition=models.Q(role=Role.SUBSCRIPTION_ADMIN),
                name="membership_one_admin_role_per_subscription",
            ),
        ]
        indexes = [models.Index(fields=["user", "role"], name="membership_user_role_idx")]

    def __str__(self) -> str:
        where = self.environment or self.subscription
        return f"{self.user}: {self.get_role_display()} of {where}"

    def clean(self) -> None:
        if self.role == Role.SUBSCRIPTION_ADMIN and self.environment_id:
            raise ValidationError(
                {"environment": "Subscription admins hold the whole subscription."}
            )
        if self.role and self.role != Role.SUBSCRIPTION_ADMIN and not self.environment_id:
            raise ValidationError({"environment": "Choose the environment this role applies to."})
        if (
            self.environment_id
            and self.subscription_id
            and self.environment.project.subscription_id != self.subscription_id
        ):
            raise ValidationError(
                {"environment": "This environment belongs to another subscription."}
            )


class Team(NamedInSubscription):
    """A named group of members inside a subscription; a user is in at most one team there."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=200)
    members = models.ManyToManyField(
        User, through="TeamMembership", related_name="teams", blank=True
    )

    objects = TeamQuerySet.as_manager()


class TeamMembership(CopiesSubscription):
    subscription_from = "team"

    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, related_name="team_memberships", db_constraint=False
    )
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="team_memberships")
    # Copied from the team so that the database can enforce one team per user per subscription.
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, editable=False)

    objects = TeamMembershipQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "user"], name="team_membership_one_team_per_subscription"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}"


class ApiKey(AbstractAPIKey):
    """A machine credential of a subscription. The secret is shown once and stored hashed."""

    # API keys are a reference table under Citus (found by prefix before the subscription is
    # known), and a reference table cannot hold a key to a distributed one.
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="api_keys", db_constraint=False
    )
    environment = models.ForeignKey(
        Environment,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="api_keys",
        help_text="Restrict the key to one environment; empty means every environment.",
        db_constraint=False,
    )
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    credit_budget = models.DecimalField(
        "credit budget per period",
        **CREDIT_DIGITS,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="The most credits this key may spend in each billing period, like a user's "
        "limit; empty means no budget of its own.",
    )

    objects = APIKeyManager.from_queryset(ApiKeyQuerySet)()

    class Meta(AbstractAPIKey.Meta):
        abstract = False
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(credit_budget__gte=0), name="api_key_budget_not_negative"
            ),
        ]

    def clean(self) -> None:
        super().clean()
        if (
            self.environment_id
            and self.subscription_id
            and self.environment.project.subscription_id != self.subscription_id
        ):
            raise ValidationError(
                {"environment": "This environment belongs to another subscription."}
            )


# The audit trail's model lives with the function that writes it.
from .audit import AuditEvent  # noqa: E402, F401
