"""Scheduled email reports: what to send to whom, and the record of every send.

A ``ReportSchedule`` belongs to a subscription and to the person who set it up (its owner):
the report is always generated with the owner's visibility, so a schedule never shows its
recipients more than its owner may see. Recipients are any email addresses, members or not.

Every email is owed by one ``Delivery`` row, unique per (schedule, period, recipient): beat
firing twice, two beat processes, a redelivered task or a manual retry all meet the same row
and send at most one email per recipient (see ``reports.services``).

Recipients are a JSON list on the schedule rather than a child model: they are edited as one
field (a text box in the admin, a list in the API), validated and de-duplicated as a whole, and
carry no state of their own. What happens per recipient lives in ``Delivery`` and
``Unsubscribe`` rows, keyed by the address.
"""

from datetime import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.utils import timezone

from accounts.models import CopiesSubscription, Environment, Subscription, environment_key
from accounts.scoping import AdministeredQuerySet, ScopedQuerySet
from credits.models import BillingPeriod

from .catalogue import ATTACHMENT_NAMES, BY_SLUG, CREDIT_USAGE_EXPORT, PLANS_WITH_TEAM_VIEWS

MAX_RECIPIENTS = 50


class Weekday(models.IntegerChoices):
    """``date.weekday()`` numbering."""

    MONDAY = 0, "Monday"
    TUESDAY = 1, "Tuesday"
    WEDNESDAY = 2, "Wednesday"
    THURSDAY = 3, "Thursday"
    FRIDAY = 4, "Friday"
    SATURDAY = 5, "Saturday"
    SUNDAY = 6, "Sunday"


def normalise_recipients(value) -> list[str]:
    """``value`` as a clean list of addresses: trimmed, lower case, each once, in the order
    given. Raises ``ValidationError`` listing every malformed address."""
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Give the recipients as a list of email addresses.", code="invalid")
    addresses, invalid = [], []
    for raw in value:
        address = raw.strip().lower()
        if not address:
            continue
        try:
            validate_email(address)
        except ValidationError:
            invalid.append(raw.strip())
            continue
        if address not in addresses:
            addresses.append(address)
    if invalid:
        raise ValidationError(
            "Not valid email addresses: %(addresses)s.",
            code="invalid_email",
            params={"addresses": ", ".join(invalid)},
        )
    if not addresses:
        raise ValidationError("Add at least one recipient.", code="required")
    if len(addresses) > MAX_RECIPIENTS:
        raise ValidationError(
            "At most %(max)d recipients (%(count)d given).",
            code="too_many",
            params={"max": MAX_RECIPIENTS, "count": len(addresses)},
        )
    return addresses


class ReportScheduleQuerySet(ScopedQuerySet):
    """Subscription admins see every schedule of their subscriptions (and sub-accounts); a
    project manager sees the schedules they own on environments they still manage."""

    def visibility(self, user) -> models.Q:
        administered = Subscription.objects.administered_by(user).values("pk")
        return models.Q(subscription_id__in=administered) | models.Q(
            created_by=user,
            scope=ReportSchedule.Scope.ENVIRONMENT,
            environment_id__in=Environment.objects.managed_by(user).values("pk"),
        )

    def key_visibility(self, api_key) -> models.Q:
        return models.Q(pk__in=[])  # schedules are people's: each has an owner


class ReportSchedule(models.Model):
    class Frequency(models.TextChoices):
        WEEKLY = "weekly", "Weekly (the previous Monday to Sunday)"
        MONTHLY = "monthly", "Monthly (the billing period that just ended, sent on the 1st)"

    class Scope(models.TextChoices):
        SUBSCRIPTION = "subscription", "The whole subscription"
        WITH_SUB_ACCOUNTS = "with_sub_accounts", "The subscription and its sub-accounts"
        ENVIRONMENT = "environment", "One environment"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="report_schedules"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="owner",
        help_text="Reports show what this person may see; without an owner nothing is sent.",
    )
    name = models.CharField(max_length=200)
    frequency = models.CharField(max_length=10, choices=Frequency.choices, default="weekly")
    weekday = models.PositiveSmallIntegerField(
        choices=Weekday.choices,
        default=Weekday.MONDAY,
        help_text="Weekly reports: the day they are sent.",
    )
    send_time = models.TimeField(
        default=time(8, 0), help_text="Local time, in the subscription's time zone."
    )
    recipients = models.JSONField(
        default=list,
        blank=True,  # "at least one" is said once, by clean()
        help_text=f"Email addresses, members or not (at most {MAX_RECIPIENTS}).",
    )
    scope = models.CharField(max_length=20, choices=Scope.choices, default="subscription")
    environment = environment_key(related_name="+", help_text="For the environment scope only.")
    attached_reports = models.JSONField(
        "CSV reports to attach",
        default=list,
        blank=True,
        help_text="Each as the export endpoints return it for the same period and scope.",
    )
    enabled = models.BooleanField(default=True, help_text="Untick to pause the reports.")
    active_since = models.DateTimeField(
        default=timezone.now,
        editable=False,
        help_text="Reports due before this are not sent: set when the schedule is created, "
        "resumed or re-timed, so that none of these sends a past report at once.",
    )
    last_due_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the last report handed to the sender was due (the dispatch's claim).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ReportScheduleQuerySet.as_manager()

    TIMING_FIELDS = ("frequency", "weekday", "send_time", "enabled")

    class Meta:
        ordering = ["subscription__name", "name"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(scope="environment", environment__isnull=False)
                    | (~models.Q(scope="environment") & models.Q(environment__isnull=True))
                ),
                name="report_schedule_environment_matches_scope",
            ),
            models.CheckConstraint(
                condition=models.Q(weekday__gte=0, weekday__lte=6),
                name="report_schedule_weekday_valid",
            ),
        ]
        indexes = [models.Index(fields=["enabled"], name="report_schedule_enabled_idx")]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        """A schedule that is created, resumed or re-timed starts afresh: reports that fell due
        before (or while it was paused) are not sent."""
        if self.enabled and self._timing() != getattr(self, "_saved_timing", None):
            self.active_since = timezone.now()
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "active_since"}
        super().save(*args, **kwargs)
        self._saved_timing = self._timing()

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        loaded = set(cls.TIMING_FIELDS) <= set(field_names)  # else reading them would query
        instance._saved_timing = instance._timing() if loaded else None
        return instance

    def _timing(self) -> tuple:
        return tuple(getattr(self, name, None) for name in self.TIMING_FIELDS)

    # --- Validation ---------------------------------------------------------------------------

    def clean(self) -> None:
        errors: dict[str, list] = {}
        try:
            self.recipients = normalise_recipients(self.recipients)
        except ValidationError as error:
            errors.setdefault("recipients", []).extend(error.messages)
        errors.update(self._scope_errors())
        errors.update(self._attachment_errors())
        if errors:
            raise ValidationError(errors)

    def _scope_errors(self) -> dict:
        if self.scope == self.Scope.ENVIRONMENT:
            if not self.environment_id:
                return {"environment": ["Choose the environment to report on."]}
            if (
                self.subscription_id
                and self.environment.project.subscription_id != self.subscription_id
            ):
                return {"environment": ["This environment belongs to another subscription."]}
        elif self.environment_id:
            return {"environment": ["Only the environment scope reports on one environment."]}
        if self.subscription_id and self.created_by_id and not self.owner_may_see_scope():
            if self.scope == self.Scope.ENVIRONMENT:
                return {
                    "environment": ["You can only schedule reports on environments you manage."]
                }
            return {"scope": ["Only the subscription's admins can report on the whole of it."]}
        return {}

    def _attachment_errors(self) -> dict:
        names = self.attached_reports
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            return {"attached_reports": ["Give a list of report names."]}
        unknown = [name for name in names if name not in ATTACHMENT_NAMES]
        if unknown:
            return {
                "attached_reports": [
                    f"Unknown reports: {', '.join(unknown)}. Choose among "
                    f"{', '.join(ATTACHMENT_NAMES)}."
                ]
            }
        self.attached_reports = sorted(set(names), key=ATTACHMENT_NAMES.index)
        problems = []
        if CREDIT_USAGE_EXPORT in names and self.frequency != self.Frequency.MONTHLY:
            problems.append(
                "The credit usage export covers a whole billing period: attach it to monthly "
                "reports."
            )
        if self.scope == self.Scope.ENVIRONMENT and set(names) - {CREDIT_USAGE_EXPORT}:
            # The usage reports have no environment filter (yet): attached to an environment's
            # schedule they would show more than the environment.
            problems.append(
                "An environment's report can attach only the credit usage export; the other "
                "reports cover the whole subscription."
            )
        if "usage-by-sub-account" in names and self.scope != self.Scope.WITH_SUB_ACCOUNTS:
            problems.append("Usage by sub-account needs the scope including sub-accounts.")
        per_member = [
            BY_SLUG[name].title for name in names if name in BY_SLUG and BY_SLUG[name].per_member
        ]
        if per_member and self.subscription_id and not self.subscription.has_team_views:
            problems.append(
                f"Per-member reports ({', '.join(per_member)}) are available on the "
                f"{PLANS_WITH_TEAM_VIEWS} plans; {self.subscription.name} is on the "
                f"{self.subscription.get_plan_display()} plan."
            )
        return {"attached_reports": problems} if problems else {}

    # --- What the owner may see -----------------------------------------------------------------

    def owner_may_see_scope(self) -> bool:
        """Whether the owner still reaches the scope: admins the subscription, project managers
        the environment. Checked when the schedule is saved and again before every send."""
        owner = self.created_by
        if owner is None or not owner.is_active:
            return False
        if self.scope == self.Scope.ENVIRONMENT:
            return Environment.objects.managed_by(owner).filter(pk=self.environment_id).exists()
        return Subscription.objects.administered_by(owner).filter(pk=self.subscription_id).exists()

    def accounts(self) -> list[Subscription]:
        """The subscriptions the report covers: the sub-accounts only with that scope, and
        only those the owner sees."""
        accounts = [self.subscription]
        if self.scope == self.Scope.WITH_SUB_ACCOUNTS:
            accounts += (
                Subscription.objects.visible_to(self.created_by)
                .filter(parent=self.subscription)
                .order_by("name")
            )
        return accounts

    @property
    def scope_label(self) -> str:
        if self.scope == self.Scope.ENVIRONMENT and self.environment_id:
            return f"{self.subscription.name} · {self.environment}"
        if self.scope == self.Scope.WITH_SUB_ACCOUNTS:
            return f"{self.subscription.name} and its sub-accounts"
        return self.subscription.name


class ScheduleRowQuerySet(ScopedQuerySet):
    """A schedule's deliveries or unsubscribes: seen by whoever sees the schedule; no API key
    reads them."""

    subscription_lookup = "schedule__subscription"

    def visibility(self, user) -> models.Q:
        return models.Q(schedule__in=ReportSchedule.objects.visible_to(user))

    def key_visibility(self, api_key) -> models.Q:
        return models.Q(pk__in=[])


class Delivery(CopiesSubscription):
    """One report (a schedule's period) owed to one recipient, and what became of it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        # Not sent on purpose: unsubscribed, removed from the recipients or paused meanwhile.
        SKIPPED = "skipped", "Skipped"

    subscription_from = "schedule"
    schedule = models.ForeignKey(
        ReportSchedule, on_delete=models.CASCADE, related_name="deliveries", db_constraint=False
    )
    period_start = models.DateField(help_text="First local day of the period covered.")
    period_end = models.DateField(help_text="Last local day of the period covered (included).")
    recipient = models.EmailField()
    status = models.CharField(max_length=10, choices=Status.choices, default="pending")
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When a failed attempt is retried."
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = ScheduleRowQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-period_start", "recipient"]
        constraints = [
            # The claim that makes a second email to the same person impossible. The end is part
            # of the period: a weekly and a monthly period can start on the same day.
            models.UniqueConstraint(
                fields=["subscription", "schedule", "period_start", "period_end", "recipient"],
                name="delivery_once_per_period_and_recipient",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_status_retry_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule} {self.period_start} to {self.period_end}: {self.recipient}"


class Unsubscribe(CopiesSubscription):
    """A recipient who asked (through the link in a report) to receive no more of it."""

    subscription_from = "schedule"
    schedule = models.ForeignKey(
        ReportSchedule, on_delete=models.CASCADE, related_name="unsubscribes", db_constraint=False
    )
    email = models.EmailField(help_text="Lower case, as the schedule's recipients.")
    created_at = models.DateTimeField(default=timezone.now)

    objects = ScheduleRowQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "schedule", "email"], name="unsubscribe_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} from {self.schedule}"


class StatementClosure(CopiesSubscription):
    """The claim that a period's statement was announced (``statement.closed``) once: inserted
    by ``reports.statements.announce_closed_statements`` when the period's grace window ends,
    unique per period, so two beat runs announce it once. The statement itself is read from
    the ledger (``reports.statements``); nothing of it is stored here."""

    subscription_from = "period"
    period = models.ForeignKey(
        BillingPeriod,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    closed_at = models.DateTimeField(help_text="The end of the period's grace window.")
    announced_at = models.DateTimeField()

    objects = AdministeredQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "period"], name="statement_closed_once"
            ),
        ]

    def __str__(self) -> str:
        return f"Statement of {self.period} closed"
