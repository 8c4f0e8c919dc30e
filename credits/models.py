"""What was spent: products, agents, billing periods, the append-only ledger, limits, rollups."""

from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Value
from django.db.models.functions import Coalesce

from accounts.models import (
    ApiKey,
    CopiesSubscription,
    Environment,
    Membership,
    Role,
    Subscription,
    Team,
    User,
    environment_key,
)
from core.money import COST_DIGITS, CREDIT_DIGITS, PRICE_DIGITS, validate_currency

from .scoping import (
    AdministeredQuerySet,
    AgentQuerySet,
    AlertRuleQuerySet,
    AppendOnlyQuerySet,
    CreditEventQuerySet,
    PlanPriceQuerySet,
    ProductQuerySet,
    SubscriptionUsageQuerySet,
    UsageQuerySet,
)


class AppendOnlyRow:
    """A model whose rows are never edited nor deleted; ``append_only_refusal`` says what to
    do instead."""

    append_only_refusal: str

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError(self.append_only_refusal)
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError(self.append_only_refusal)


class Product(models.Model):
    """An AI-enabled product that spends credits (AI agent, writing assistant, ...)."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    enabled_for = models.ManyToManyField(Subscription, related_name="enabled_products", blank=True)

    objects = ProductQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=200)
    agent_type = models.CharField(max_length=50, blank=True, help_text="e.g. single_task")
    model = models.CharField("default model", max_length=100, blank=True)
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="agents_created"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "name"], name="agent_name_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class BillingPeriod(models.Model):
    """One calendar month of a subscription, in its time zone, with its running counters.

    ``credits_used`` (every type), ``grant_used`` and ``excess_used`` (its parts drawn from
    grants and beyond the allocation) are only ever changed by conditional
    ``UPDATE ... SET credits_used = credits_used + x WHERE ...`` statements in the recording
    service, so concurrent charges cannot lose an update.
    """

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="billing_periods"
    )
    start = models.DateTimeField(help_text="00:00 on the 1st, local time, stored in UTC.")
    end = models.DateTimeField(help_text="Start of the next period (exclusive).")
    credits_used = models.DecimalField(**CREDIT_DIGITS, default=Decimal(0))
    grant_used = models.DecimalField(
        **CREDIT_DIGITS,
        default=Decimal(0),
        db_default=Decimal(0),  # the bulk writers (month start, demo, bench) leave it out
        help_text="The part of credits_used drawn from grants.",
    )
    excess_used = models.DecimalField(**CREDIT_DIGITS, default=Decimal(0))
    opened_at = models.DateTimeField(auto_now_add=True)

    objects = AdministeredQuerySet.as_manager()

    class Meta:
        ordering = ["subscription", "-start"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "start"], name="period_start_unique"),
            models.CheckConstraint(
                condition=models.Q(end__gt=models.F("start")), name="period_end_after_start"
            ),
            models.CheckConstraint(
                condition=models.Q(credits_used__gte=0) & models.Q(excess_used__gte=0),
                name="period_counters_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(grant_used__gte=0), name="period_grant_used_not_negative"
            ),
        ]

    def __str__(self) -> str:
        local_start = self.start.astimezone(self.subscription.zone)
        return f"{self.subscription} {local_start:%Y-%m}"


class CreditEvent(AppendOnlyRow, models.Model):
    """One row of the append-only ledger: an AI operation, or an adjustment with a reason.

    Nothing updates or deletes a row (the model, its queryset and, on PostgreSQL, a trigger
    refuse it); corrections are new adjustment rows. Idempotency keys live in
    ``IdempotencyRecord`` because the ledger is partitioned by month on PostgreSQL (see
    ``credits.partitions``). Foreign keys get no index of their own: the composite indexes
    below serve the real queries, and every extra index slows ingestion.
    """

    append_only_refusal = "Credit events are append-only; record an adjustment instead."

    class Kind(models.TextChoices):
        USAGE = "usage", "Usage"
        ADJUSTMENT = "adjustment", "Adjustment"

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    timestamp = models.DateTimeField(help_text="When the credits were used (UTC).")
    recorded_at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.USAGE)
    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    # Keys to other tenant tables are (subscription, x) in the database (``db_constraint``
    # off here), so that Citus checks each on one node; see the README's "Scaling out".
    period = models.ForeignKey(
        BillingPeriod,
        on_delete=models.PROTECT,
        related_name="events",
        db_index=False,
        db_constraint=False,
    )
    environment = models.ForeignKey(
        Environment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    user = models.ForeignKey(
        User, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    feature = models.CharField(max_length=100, blank=True)
    agent = models.ForeignKey(
        Agent,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    model = models.CharField(max_length=100, blank=True)
    credits = models.DecimalField(**CREDIT_DIGITS)
    excess_credits = models.DecimalField(
        **CREDIT_DIGITS,
        default=Decimal(0),
        help_text="The part of these credits beyond the base allocation (soft mode).",
    )
    # Defaults in the database too: the bulk writers (demo seed, benchmarks) leave them out.
    grant_credits = models.DecimalField(
        **CREDIT_DIGITS,
        default=Decimal(0),
        db_default=Decimal(0),
        help_text="The part of these credits drawn from grants (top-ups and bonuses).",
    )
    cost = models.DecimalField(
        **COST_DIGITS,
        default=Decimal(0),
        db_default=Decimal(0),
        help_text="Base x credit price + excess x excess price in effect then; unrounded.",
    )
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SUCCEEDED)
    session_id = models.CharField(max_length=200, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    reason = models.TextField(blank=True, help_text="Why an adjustment was made.")
    created_by = models.ForeignKey(
        User,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        help_text="Who entered an adjustment.",
    )

    objects = CreditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-timestamp", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind="adjustment") | models.Q(credits__gte=0),
                name="creditevent_usage_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(excess_credits__gte=0), name="creditevent_excess_not_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(grant_credits__gte=0), name="creditevent_grant_not_negative"
            ),
            models.CheckConstraint(
                condition=~models.Q(kind="adjustment") | ~models.Q(reason=""),
                name="creditevent_adjustment_has_reason",
            ),
        ]
        indexes = [
            models.Index(fields=["subscription", "timestamp"], name="event_subscription_time_idx"),
            models.Index(fields=["environment", "timestamp"], name="event_environment_time_idx"),
            models.Index(fields=["user", "timestamp"], name="event_user_time_idx"),
            models.Index(fields=["period"], name="event_period_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.credits} credits at {self.timestamp:%Y-%m-%d %H:%M}"

    @property
    def actor_label(self) -> str:
        """The user's email, or the API key's name when a key acted alone."""
        if self.user_id:
            return self.user.email
        if self.api_key_id:
            return self.api_key.name
        return ""


class IdempotencyRecord(models.Model):
    """The first outcome of an idempotency key, kept permanently (as Stripe does).

    Outside the ledger on purpose: a unique (subscription, key) on a month-partitioned ledger
    would have to include the partition key and so would not be unique per key any more.
    """

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    payload_hash = models.CharField(max_length=64)
    # Empty only inside the transaction that claimed the key and is recording its event. No
    # database constraint: the ledger is partitioned, and PostgreSQL can only reference a
    # partitioned table through a key that includes the partition key.
    event = models.ForeignKey(
        CreditEvent,
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subscription", "key"], name="idempotency_key_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.key} -> event {self.event_id}"


def _unique_per_dimensions(time_field: str, *, name: str) -> models.UniqueConstraint:
    """One row per subscription, ``time_field`` and every dimension. A missing dimension is
    NULL; COALESCE makes NULLs collide so that the recording service can upsert with
    ON CONFLICT."""
    return models.UniqueConstraint(
        F("subscription_id"),
        F(time_field),
        Coalesce("environment_id", Value(0)),
        Coalesce("user_id", Value(0)),
        Coalesce("api_key_id", Value("")),
        Coalesce("product_id", Value(0)),
        Coalesce("agent_id", Value(0)),
        F("model"),
        F("feature"),
        name=name,
    )


class UsageSums(models.Model):
    """The figures that add up, as the daily rollup and every narrow rollup keep them."""

    credits = models.DecimalField(**CREDIT_DIGITS, default=Decimal(0))
    excess_credits = models.DecimalField(**CREDIT_DIGITS, default=Decimal(0))
    # Defaults in the database too: the bulk writers (demo seed, benchmarks) leave them out.
    grant_credits = models.DecimalField(**CREDIT_DIGITS, default=Decimal(0), db_default=Decimal(0))
    cost = models.DecimalField(**COST_DIGITS, default=Decimal(0), db_default=Decimal(0))
    runs = models.PositiveIntegerField(default=0)
    failed_runs = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    latency_ms_total = models.PositiveBigIntegerField(default=0)
    latency_samples = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True


class DailyUsage(UsageSums):
    """Per-day rollup of the ledger, kept in step by the recording service.

    ``day`` is the local date in the subscription's time zone. Pages and reports read this
    table, never the raw ledger.
    """

    day = models.DateField()
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="+")
    period = models.ForeignKey(
        BillingPeriod, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    environment = models.ForeignKey(
        Environment,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
    )
    user = models.ForeignKey(
        User, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    product = models.ForeignKey(
        Product, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    agent = models.ForeignKey(
        Agent,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
    )
    model = models.CharField(max_length=100, blank=True)
    feature = models.CharField(max_length=100, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)

    objects = UsageQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "daily usage"
        constraints = [_unique_per_dimensions("day", name="daily_usage_dimensions_unique")]
        indexes = [
            models.Index(fields=["subscription", "day"], name="daily_subscription_day_idx"),
            models.Index(fields=["environment", "day"], name="daily_environment_day_idx"),
            models.Index(fields=["user", "day"], name="daily_user_day_idx"),
            models.Index(fields=["period"], name="daily_period_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.day}: {self.credits} credits"


class RollupGrain(models.TextChoices):
    DAY = "day", "Day"
    MONTH = "month", "Month"


class NarrowRollup(UsageSums):
    """A rollup keyed by fewer dimensions than ``DailyUsage``, with a row per local day and
    one per local month (``grain``), so that a year reads twelve monthly rows per key.

    ``day`` is the local date in the subscription's time zone, or the first day of the local
    month for a monthly row. Kept in step by ``credits.rollups.add_to_rollups``; which one a
    report reads is chosen by ``credits.rollups.narrowest_rollup``. Foreign keys get no index
    of their own: the unique key starts with (subscription, grain, day), which is how reports
    read, and every extra index slows ingestion.
    """

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    grain = models.CharField(max_length=5, choices=RollupGrain.choices)
    day = models.DateField(help_text="The local day, or the first day of the local month.")

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.grain} {self.day}: {self.credits} credits"


def _optional(model, **options):
    return models.ForeignKey(
        model,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        **options,
    )


class PersonRollup(NarrowRollup):
    """Usage per person: environment, user and API key (by user, team, environment and
    sub-account), and their latest event (the member tables' "last activity"). Everyone
    reads it through ``visible_to``, like the ledger."""

    environment = _optional(Environment, db_constraint=False)
    user = _optional(User)
    api_key = _optional(ApiKey)
    last_event_at = models.DateTimeField(null=True, blank=True)

    objects = UsageQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                F("subscription_id"),
                F("grain"),
                F("day"),
                Coalesce("environment_id", Value(0)),
                Coalesce("user_id", Value(0)),
                Coalesce("api_key_id", Value("")),
                name="person_rollup_unique",
            ),
        ]


class LatencyHistogram(models.Model):
    """Runs per latency bucket, as ``{"bucket": runs}``: the 95th percentile without the
    ledger. Buckets are logarithmic (``credits.rollups.LATENCY_BUCKETS``), each within 1% of
    its value; only the buckets that have runs are kept."""

    latency_histogram = models.JSONField(default=dict)

    class Meta:
        abstract = True


class AgentRollup(NarrowRollup, LatencyHistogram):
    """Usage per agent, with sessions and a latency histogram, for the subscription as a
    whole: no environment or user, so only the subscription's admins read it
    (``visible_to``).

    ``sessions`` counts each session once per local day on which it ran with the agent (see
    ``AgentSessionDay``); ``session_runs`` are the runs that had a session id.
    """

    agent = _optional(Agent, db_constraint=False)
    sessions = models.PositiveIntegerField(default=0)
    session_runs = models.PositiveIntegerField(default=0)

    objects = SubscriptionUsageQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                F("subscription_id"),
                F("grain"),
                F("day"),
                Coalesce("agent_id", Value(0)),
                name="agent_rollup_unique",
            ),
        ]


class ModelRollup(NarrowRollup, LatencyHistogram):
    """Usage per model, with a latency histogram, for the subscription as a whole: admins
    only (``visible_to``)."""

    model = models.CharField(max_length=100, blank=True)

    objects = SubscriptionUsageQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                F("subscription_id"), F("grain"), F("day"), F("model"), name="model_rollup_unique"
            ),
        ]


class ProductRollup(NarrowRollup):
    """Usage per product, feature and environment for the subscription as a whole: the
    admin's dashboard (credits per day and product, the features used), and reports and usage
    queries by any of the three (a year of environments and products per month reads twelve
    monthly rows per key). Its rows per month are bounded by the catalogue and the
    environments, whatever the volume. No user, so admins only (``visible_to``)."""

    product = _optional(Product)
    feature = models.CharField(max_length=100, blank=True)
    environment = _optional(Environment, db_constraint=False)

    objects = SubscriptionUsageQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                F("subscription_id"),
                F("grain"),
                F("day"),
                Coalesce("product_id", Value(0)),
                F("feature"),
                Coalesce("environment_id", Value(0)),
                name="product_rollup_unique",
            ),
        ]


class SubscriptionRollup(NarrowRollup):
    """Usage per product, feature, agent and model for the subscription as a whole: nothing
    about who or where, so only the subscription's admins read it (``visible_to``)."""

    product = _optional(Product)
    agent = _optional(Agent, db_constraint=False)
    model = models.CharField(max_length=100, blank=True)
    feature = models.CharField(max_length=100, blank=True)

    objects = SubscriptionUsageQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                F("subscription_id"),
                F("grain"),
                F("day"),
                Coalesce("product_id", Value(0)),
                Coalesce("agent_id", Value(0)),
                F("model"),
                F("feature"),
                name="subscription_rollup_unique",
            ),
        ]


class HourlyUsage(UsageSums):
    """Usage per local hour and every dimension, for the usage API's hourly windows
    (``GET /api/v1/usage/?window=hour``). ``hour`` is the instant the local hour starts, so
    the two hours that share a wall-clock time when DST ends stay apart. Kept for
    ``credits.pruning.HOURLY_USAGE_RETENTION_DAYS`` days: a row per hour and key is the widest
    rollup, and days and months read the daily rollups."""

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    hour = models.DateTimeField(help_text="The start of the local hour (an instant).")
    environment = _optional(Environment, db_constraint=False)
    user = _optional(User)
    api_key = _optional(ApiKey)
    product = _optional(Product)
    agent = _optional(Agent, db_constraint=False)
    model = models.CharField(max_length=100, blank=True)
    feature = models.CharField(max_length=100, blank=True)

    objects = UsageQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "hourly usage"
        constraints = [_unique_per_dimensions("hour", name="hourly_usage_unique")]

    def __str__(self) -> str:
        return f"{self.hour}: {self.credits} credits"


class AgentSessionDay(models.Model):
    """A session seen on a local day with an agent: the claim that counts it once in
    ``AgentRollup.sessions``. Written by ``add_to_rollups``, never read by reports; the
    claims of local days that no event can reach any more are deleted daily
    (``credits.pruning``)."""

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    day = models.DateField()
    agent = _optional(Agent, db_constraint=False)
    session_id = models.CharField(max_length=200)

    objects = SubscriptionUsageQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                F("subscription_id"),
                F("day"),
                Coalesce("agent_id", Value(0)),
                F("session_id"),
                name="agent_session_day_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day}: session {self.session_id}"


class CreditLimit(models.Model):
    """A per-period cap for one user or one team of a subscription."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="limits")
    user = models.ForeignKey(
        User, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, null=True, blank=True, related_name="+", db_constraint=False
    )
    credits = models.DecimalField(
        "credits per period", **CREDIT_DIGITS, validators=[MinValueValidator(0)]
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = AdministeredQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=False, team__isnull=True)
                    | models.Q(user__isnull=True, team__isnull=False)
                ),
                name="limit_for_user_or_team",
            ),
            models.CheckConstraint(condition=models.Q(credits__gte=0), name="limit_not_negative"),
            models.UniqueConstraint(fields=["subscription", "user"], name="limit_user_unique"),
            models.UniqueConstraint(fields=["subscription", "team"], name="limit_team_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user or self.team}: {self.credits} credits per period"

    def clean(self) -> None:
        if bool(self.user_id) == bool(self.team_id):
            raise ValidationError("Set a limit for either one user or one team.")
        check_owner_in_subscription(self)


def check_owner_in_subscription(obj) -> None:
    """A limit's or rule's team belongs to its subscription, and its user holds a role there."""
    if obj.team_id and obj.subscription_id and obj.team.subscription_id != obj.subscription_id:
        raise ValidationError({"team": "This team belongs to another subscription."})
    if (
        obj.user_id
        and obj.subscription_id
        and not obj.user.memberships.filter(subscription_id=obj.subscription_id).exists()
    ):
        raise ValidationError({"user": "This user has no role in the subscription."})


def _period_usage_constraints(owner: str) -> list:
    return [
        models.UniqueConstraint(
            fields=["subscription", "period", owner], name=f"{owner}_period_usage_unique"
        ),
        models.CheckConstraint(
            condition=models.Q(credits_used__gte=0), name=f"{owner}_period_usage_not_negative"
        ),
    ]


class PeriodUsage(CopiesSubscription):
    """One owner's (a user's or a team's) running total in one billing period, charged like
    ``BillingPeriod``."""

    owner: str  # the name of the owner's field
    subscription_from = "period"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    period = models.ForeignKey(
        BillingPeriod, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    credits_used = models.DecimalField(**CREDIT_DIGITS, default=Decimal(0))

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{getattr(self, f'{self.owner}_id')} in {self.period}: {self.credits_used}"


class UserPeriodUsage(PeriodUsage):
    owner = "user"
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = _period_usage_constraints("user")


class TeamPeriodUsage(PeriodUsage):
    owner = "team"
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+", db_constraint=False)

    class Meta:
        constraints = _period_usage_constraints("team")


class ApiKeyPeriodUsage(PeriodUsage):
    """What one API key spent in a period, counted whether or not it has a budget, so that a
    budget set mid-period applies to the usage already recorded (as a user's limit does)."""

    owner = "api_key"
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = _period_usage_constraints("api_key")


class ThresholdAlert(models.Model):
    """A usage threshold crossed in a period (or the period's opening); unique, so each
    email is sent once."""

    class Threshold(models.TextChoices):
        ALLOCATION_80 = "allocation_80", "80% of the allocation"
        ALLOCATION_100 = "allocation_100", "100% of the allocation"
        EXCESS_100 = "excess_100", "100% of the excess allowance"
        # Not a usage threshold: the claim that a new period's reset notice is sent once.
        PERIOD_OPENED = "period_opened", "New period opened"

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="+")
    period = models.ForeignKey(
        BillingPeriod, on_delete=models.CASCADE, related_name="alerts", db_constraint=False
    )
    threshold = models.CharField(max_length=30, choices=Threshold.choices)
    crossed_at = models.DateTimeField(auto_now_add=True)
    notified_at = models.DateTimeField(null=True, blank=True)

    objects = AdministeredQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "period", "threshold"],
                name="threshold_alert_once_per_period",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_threshold_display()} in {self.period}"


# --- Alerts and webhooks ---------------------------------------------------------------------


class WebhookEndpoint(models.Model):
    """Where a subscription's events are posted: a signed webhook, or a Slack incoming webhook.

    ``secret`` signs each delivery (``credits.webhooks``); it is kept readable because the
    signature needs it, shown once when made, and never logged. After a rotation the previous
    secret keeps signing too until ``previous_secret_expires_at``, so receivers can switch
    without dropping a delivery.
    """

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Signed webhook"
        SLACK = "slack", "Slack incoming webhook"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.WEBHOOK)
    url = models.URLField("URL", max_length=2000)
    secret = models.CharField(max_length=100, editable=False)
    previous_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    enabled = models.BooleanField(
        default=True, help_text="Disabled by itself once every delivery failed for a day."
    )
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    event_types = ArrayField(
        models.CharField(max_length=50),
        blank=True,
        default=list,
        help_text="The events posted to it; none chosen: every event.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AdministeredQuerySet.as_manager()

    class Meta:
        ordering = ["subscription", "name"]

    def __str__(self) -> str:
        return self.name


class WebhookDelivery(models.Model):
    """One event owed to one endpoint, and how its attempts went: the delivery log.

    ``event_id`` is the event's idempotency id, the same for every endpoint and every attempt
    (receivers deduplicate on it); unique per endpoint, so publishing an event twice (a retried
    task) owes it once.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Gave up"

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_constraint=False
    )
    event_id = models.UUIDField()
    event_type = models.CharField(max_length=50)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = AdministeredQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "endpoint", "event_id"], name="delivery_once"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="delivery_due_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.endpoint}"


def _channel(kind: str) -> models.ForeignKey:
    """An alert rule's endpoint of one kind (optional)."""
    return models.ForeignKey(
        WebhookEndpoint,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
        limit_choices_to={"kind": kind},
    )


class AlertRule(models.Model):
    """Thresholds (any percentages) of one target's credits per period, and who hears of
    each crossing: once per target, threshold and period (``AlertFiring``)."""

    class Target(models.TextChoices):
        ALLOCATION = "allocation", "The subscription's base allocation"
        EXCESS = "excess_allowance", "The subscription's excess allowance (soft mode)"
        TEAM = "team", "A team's limit"
        USER = "user", "A user's limit"
        API_KEY = "api_key", "An API key's budget"
        ENVIRONMENT = "environment", "An environment's credits"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="alert_rules"
    )
    name = models.CharField(max_length=100)
    target = models.CharField(max_length=20, choices=Target.choices)
    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, null=True, blank=True, related_name="+", db_constraint=False
    )
    user = models.ForeignKey(
        User, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    api_key = models.ForeignKey(
        ApiKey,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="API key",
    )
    thresholds = ArrayField(
        models.DecimalField(max_digits=7, decimal_places=2, validators=[MinValueValidator(0)]),
        help_text="Percentages of the target, comma-separated, e.g. 50, 90, 100.",
    )
    email_admins = models.BooleanField("email the subscription's admins", default=True)
    email_addresses = ArrayField(
        models.EmailField(), blank=True, default=list, help_text="More recipients, comma-separated."
    )
    webhook = _channel(WebhookEndpoint.Kind.WEBHOOK)
    slack = _channel(WebhookEndpoint.Kind.SLACK)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    environment = environment_key(related_name="+", help_text="For an environment rule.")
    budget = models.DecimalField(
        **CREDIT_DIGITS,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.0001"))],
        help_text="Environments: the credits per period the thresholds are percentages of; "
        "empty: the subscription's base allocation.",
    )
    owner = models.ForeignKey(
        User,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="The project manager whose rule this is (it emails the environment's people "
        "only); empty: a rule of the subscription's admins.",
    )

    objects = AlertRuleQuerySet.as_manager()

    class Meta:
        ordering = ["subscription", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        owners = {"team": self.team_id, "user": self.user_id, "api_key": self.api_key_id}
        named = {name for name, owner_id in owners.items() if owner_id}
        if self.target in owners and named != {self.target}:
            chosen = self._meta.get_field(self.target).verbose_name
            raise ValidationError({self.target: f"Choose the {chosen} (and nothing else)."})
        if self.target not in owners and named:
            raise ValidationError("Only a team, user or API key rule names a team, user or key.")
        self._check_environment()
        check_owner_in_subscription(self)
        if self.api_key_id and self.api_key.subscription_id != self.subscription_id:
            raise ValidationError({"api_key": "This API key belongs to another subscription."})
        for channel in ("webhook", "slack"):
            endpoint = getattr(self, channel)
            if endpoint and endpoint.subscription_id != self.subscription_id:
                raise ValidationError({channel: "This endpoint belongs to another subscription."})
        if not self.thresholds or any(value <= 0 for value in self.thresholds):
            raise ValidationError({"thresholds": "Give one or more percentages above 0."})
        if self.owner_id:
            self._check_notification_only()

    def _check_environment(self) -> None:
        if self.target != self.Target.ENVIRONMENT:
            if self.environment_id or self.budget is not None:
                raise ValidationError("Only a rule on an environment names one, or a budget.")
            return
        if not self.environment_id or self.user_id or self.team_id or self.api_key_id:
            raise ValidationError(
                {"environment": "Choose the environment (and no team, user or key)."}
            )
        if self.subscription_id and self.environment.subscription_id != self.subscription_id:
            raise ValidationError(
                {"environment": "This environment belongs to another subscription."}
            )

    def _check_notification_only(self) -> None:
        """A project manager's rule watches an environment they manage and emails some of its
        people; it changes nothing and reaches no channel of the subscription."""
        if self.target != self.Target.ENVIRONMENT:
            raise ValidationError({"target": "A project manager's rule watches an environment."})
        managed = Environment.objects.managed_by(self.owner).filter(pk=self.environment_id)
        if not managed.exists():
            raise ValidationError({"environment": "Choose an environment you manage."})
        if self.webhook_id or self.slack_id or self.email_admins:
            raise ValidationError("A project manager's rule emails people of its environment only.")
        people = environment_people(self.environment).values_list("email", flat=True)
        known = {email.lower() for email in people}
        strangers = sorted({a for a in self.email_addresses if a.lower() not in known})
        if strangers:
            raise ValidationError(
                {"email_addresses": f"Not among the environment's people: {', '.join(strangers)}."}
            )
        if not self.email_addresses:
            raise ValidationError({"email_addresses": "Give one or more addresses."})


def environment_people(environment: Environment):
    """Who works in an environment: its project managers and members, and the admins of its
    subscription (admins work in every environment)."""
    roles = Membership.objects.filter(
        models.Q(environment=environment)
        | models.Q(subscription_id=environment.subscription_id, role=Role.SUBSCRIPTION_ADMIN)
    )
    return User.objects.filter(pk__in=roles.values("user_id"), is_active=True)


class AlertFiring(models.Model):
    """A rule's threshold crossed in a period: unique, so each crossing notifies once; sent
    like ``ThresholdAlert`` (locked, sent, ``notified_at`` set in one transaction)."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="+")
    rule = models.ForeignKey(
        AlertRule, on_delete=models.CASCADE, related_name="firings", db_constraint=False
    )
    period = models.ForeignKey(
        BillingPeriod, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    threshold = models.DecimalField(max_digits=7, decimal_places=2)
    credits_used = models.DecimalField(**CREDIT_DIGITS)
    credits_limit = models.DecimalField(**CREDIT_DIGITS)
    crossed_at = models.DateTimeField()
    notified_at = models.DateTimeField(null=True, blank=True)

    objects = AdministeredQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "rule", "period", "threshold"],
                name="alert_firing_once_per_period",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule} at {self.threshold}% in {self.period}"


# --- Money: prices and grants ----------------------------------------------------------------


class Price(AppendOnlyRow, models.Model):
    """What a credit costs from ``effective_from`` on: ``credit_price`` for base credits,
    ``excess_price`` for credits beyond the allocation (soft mode), per credit, in
    ``currency``. Append-only: a change is a new row from its moment on
    (``credits.pricing.price_at`` finds the one in effect)."""

    append_only_refusal = "Prices are append-only; add a new price from its moment on."

    currency = models.CharField(max_length=3, help_text="ISO 4217, e.g. EUR.")
    credit_price = models.DecimalField(
        **PRICE_DIGITS, validators=[MinValueValidator(0)], help_text="Per base credit."
    )
    excess_price = models.DecimalField(
        **PRICE_DIGITS, validators=[MinValueValidator(0)], help_text="Per excess credit."
    )
    effective_from = models.DateTimeField(help_text="Applies to events from this instant on.")
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return (
            f"{self.credit_price} {self.currency} per credit, {self.excess_price} per excess "
            f"credit, from {self.effective_from:%Y-%m-%d %H:%M}"
        )

    def clean(self) -> None:
        # Checked here, not as a field validator: migrations must not import live code.
        try:
            validate_currency(self.currency)
        except ValidationError as error:
            raise ValidationError({"currency": error.messages}) from None


def _prices_not_negative(prefix: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=models.Q(credit_price__gte=0) & models.Q(excess_price__gte=0),
        name=f"{prefix}_prices_not_negative",
    )


class PlanPrice(Price):
    """A plan's price, set by platform staff; every subscription on the plan pays it unless
    it has its own (``SubscriptionPrice``). Not a tenant row: a reference table under Citus."""

    plan = models.CharField(max_length=20, choices=Subscription.Plan.choices)

    objects = PlanPriceQuerySet.as_manager()

    class Meta:
        ordering = ["plan", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "effective_from"], name="plan_price_once"),
            _prices_not_negative("plan"),
        ]


class SubscriptionPrice(Price):
    """One subscription's own price, overriding its plan's from ``effective_from`` on."""

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="prices", db_index=False
    )

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["subscription", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "effective_from"], name="subscription_price_once"
            ),
            _prices_not_negative("subscription"),
        ]


class CreditGrant(AppendOnlyRow, models.Model):
    """Credits added to a subscription: a purchased top-up or a bonus. Append-only (corrected by
    ``GrantAdjustment`` rows); the counters change only by conditional updates: the charge adds
    to ``credits_used`` in draw-down order (``credits.charging``), the lapse task moves an
    expired grant's remainder to ``credits_lapsed`` once, and an adjustment adds to
    ``credits_adjusted``. Remaining = credits + adjusted - used - lapsed."""

    append_only_refusal = "Grants are append-only; record a grant adjustment instead."

    class Kind(models.TextChoices):
        TOP_UP = "top_up", "Top-up (purchased)"
        BONUS = "bonus", "Bonus (free)"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, related_name="grants", db_index=False
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    credits = models.DecimalField(**CREDIT_DIGITS)
    price = models.DecimalField(
        **PRICE_DIGITS,
        default=Decimal(0),
        help_text="The total paid for it, in the currency (0 for a bonus).",
    )
    currency = models.CharField(max_length=3, blank=True, help_text="ISO 4217, e.g. EUR.")
    effective_at = models.DateTimeField(help_text="Usable from this instant on.")
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Empty: never expires. Its remainder lapses then."
    )
    reason = models.TextField()
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    credits_used = models.DecimalField(**CREDIT_DIGITS, default=Decimal(0), editable=False)
    credits_lapsed = models.DecimalField(**CREDIT_DIGITS, default=Decimal(0), editable=False)
    credits_adjusted = models.DecimalField(**CREDIT_DIGITS, default=Decimal(0), editable=False)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["subscription", "-effective_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(credits__gt=0), name="grant_credits_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(price__gte=0), name="grant_price_not_negative"
            ),
            models.CheckConstraint(
                condition=~models.Q(kind="bonus") | models.Q(price=0), name="grant_bonus_is_free"
            ),
            models.CheckConstraint(
                condition=models.Q(expires_at__isnull=True)
                | models.Q(expires_at__gt=F("effective_at")),
                name="grant_expires_after_effective",
            ),
            models.CheckConstraint(
                condition=models.Q(credits_used__gte=0)
                & models.Q(credits_lapsed__gte=0)
                & models.Q(
                    credits_used__lte=F("credits") + F("credits_adjusted") - F("credits_lapsed")
                ),
                name="grant_counters_within_credits",
            ),
            models.CheckConstraint(condition=~models.Q(reason=""), name="grant_has_reason"),
        ]
        indexes = [
            models.Index(fields=["subscription", "expires_at"], name="grant_subscription_exp_idx")
        ]

    def __str__(self) -> str:
        day = f"{self.effective_at:%Y-%m-%d}"
        return f"{self.get_kind_display()}: {self.credits} credits from {day}"

    @property
    def remaining(self) -> Decimal:
        return self.credits + self.credits_adjusted - self.credits_used - self.credits_lapsed


class GrantAdjustment(AppendOnlyRow, models.Model):
    """A signed correction of a grant's credits by a person (``adjustment``), or the lapse of
    an expired grant's remainder (``lapse``, negative, once per grant, by the lapse task).
    Append-only, like the ledger."""

    append_only_refusal = "Grant adjustments are append-only."

    class Kind(models.TextChoices):
        ADJUSTMENT = "adjustment", "Adjustment"
        LAPSE = "lapse", "Lapse of the remainder at expiry"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    grant = models.ForeignKey(
        CreditGrant,
        on_delete=models.PROTECT,
        related_name="adjustments",
        db_index=False,
        db_constraint=False,
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.ADJUSTMENT)
    credits = models.DecimalField(**CREDIT_DIGITS, help_text="Signed: negative takes away.")
    at = models.DateTimeField(help_text="When it takes effect (a lapse: the grant's expiry).")
    reason = models.TextField()
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["subscription", "-at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "grant"],
                condition=models.Q(kind="lapse"),
                name="grant_lapses_once",
            ),
            models.CheckConstraint(
                condition=~models.Q(credits=0), name="grant_adjustment_not_zero"
            ),
            models.CheckConstraint(
                condition=~models.Q(reason=""), name="grant_adjustment_has_reason"
            ),
        ]
        indexes = [models.Index(fields=["subscription", "grant"], name="grant_adjustment_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.credits} credits of grant {self.grant_id}"
