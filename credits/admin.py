"""The credits side of the admin: the product catalogue, agents, limits, balances and ledger.

Scoping comes from ``accounts.admin_scoping``, as for the rest of the admin.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from accounts.admin_scoping import ScopedModelAdmin, ScopedRelatedFilter, administered_zones
from accounts.models import Membership, Subscription
from core.admin import ReadOnlyAdminMixin, credit_column
from core.display import format_credits, format_moment
from core.money import CreditsFormField

from . import (
    money_admin,  # noqa: F401  (registers the prices' and grants' admins)
    webhooks,
)
from .models import (
    Agent,
    AlertRule,
    BillingPeriod,
    CreditEvent,
    CreditLimit,
    Product,
    WebhookDelivery,
    WebhookEndpoint,
)
from .recording import record_adjustment


@admin.register(Product)
class ProductAdmin(ScopedModelAdmin):
    list_display = ("name", "slug")
    search_fields = ("name", "slug")
    ordering = ("name",)
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("enabled_for",)

    def get_fields(self, request, obj=None):
        """Which subscriptions use a product is platform business, not a tenant's."""
        fields = ("name", "slug", "enabled_for")
        return fields if request.user.is_superuser else fields[:2]


@admin.register(Agent)
class AgentAdmin(ScopedModelAdmin):
    list_display = ("name", "agent_type", "model", "subscription", "created_by", "created_at")
    list_filter = ("agent_type", ("subscription", ScopedRelatedFilter))
    list_select_related = ("subscription", "created_by")
    search_fields = ("name", "agent_type", "model")
    ordering = ("subscription__name", "name")
    fields = ("subscription", "name", "agent_type", "model", "created_by", "created_at")
    readonly_fields = ("created_by", "created_at")
    fixed_after_creation = ("subscription",)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(BillingPeriod)
class BillingPeriodAdmin(ReadOnlyAdminMixin, ScopedModelAdmin):
    """Balances per month. Remaining credits are measured against the current allocation."""

    list_display = (
        "month",
        "subscription",
        "credits_used_amount",
        "credits_remaining",
        "excess_used_amount",
        "excess_remaining",
    )
    list_filter = (("subscription", ScopedRelatedFilter),)
    list_select_related = ("subscription",)
    search_fields = ("subscription__name",)
    ordering = ("-start", "subscription__name")
    fields = (
        "subscription",
        "start",
        "end",
        "credits_used_amount",
        "credits_remaining",
        "excess_used_amount",
        "excess_remaining",
        "opened_at",
    )

    @admin.display(description="month", ordering="start")
    def month(self, period):
        return f"{period.start.astimezone(period.subscription.zone):%B %Y}"

    credits_used_amount = credit_column("credits_used", "credits used")

    @admin.display(description="credits remaining")
    def credits_remaining(self, period):
        return format_credits(max(period.subscription.base_allocation - period.credits_used, 0))

    excess_used_amount = credit_column("excess_used", "excess used")

    @admin.display(description="excess remaining")
    def excess_remaining(self, period):
        return format_credits(max(period.subscription.excess_allowance - period.excess_used, 0))


class AdjustmentForm(forms.Form):
    subscription = forms.ModelChoiceField(queryset=Subscription.objects.none())
    credits = CreditsFormField(
        signed=True, help_text="Positive to charge credits, negative to give them back."
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))
    timestamp = forms.DateTimeField(
        required=False,
        help_text="The moment whose billing period is corrected, e.g. 2026-10-31 12:00 (UTC). "
        "Empty: now.",
    )

    def clean_credits(self):
        if self.cleaned_data["credits"] == 0:
            raise ValidationError("An adjustment of zero credits changes nothing.")
        return self.cleaned_data["credits"]


@admin.register(CreditEvent)
class CreditEventAdmin(ReadOnlyAdminMixin, ScopedModelAdmin):
    """The append-only ledger, to read. Platform staff correct it with adjustment rows
    recorded by the recording service (so counters and rollups follow); nobody edits it."""

    wide_changelist = True
    # What people need fits 1400 px: tokens, sessions and the rest are on the detail page. The
    # subscription column shows only to those who administer several (``get_list_display``).
    list_display = (
        "time",
        "actor",
        "subscription",
        "environment",
        "product",
        "agent",
        "model",
        "credits_amount",
        "excess_amount",
        "status",
    )
    list_filter = (
        "status",
        "kind",
        ("subscription", ScopedRelatedFilter),
        ("environment", ScopedRelatedFilter),
        ("product", ScopedRelatedFilter),
    )
    list_select_related = (
        "subscription",
        "user",
        "api_key",
        "environment__project",
        "product",
        "agent",
    )
    search_fields = (
        "user__email",
        "api_key__name",
        "agent__name",
        "model",
        "=session_id",
        "=idempotency_key",
    )
    date_hierarchy = "timestamp"
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # counting every filter choice would scan the ledger
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "timestamp",
                    "recorded_at",
                    "kind",
                    "status",
                    "subscription",
                    "period",
                    "environment",
                )
            },
        ),
        ("Actor", {"fields": ("user", "api_key")}),
        (
            "Operation",
            {"fields": ("product", "feature", "agent", "model", "session_id", "idempotency_key")},
        ),
        (
            "Credits and tokens",
            {
                "fields": (
                    "credits_amount",
                    "excess_amount",
                    "input_tokens",
                    "output_tokens",
                    "latency_ms",
                )
            },
        ),
        ("Adjustment", {"fields": ("reason", "created_by")}),
    )

    def get_list_display(self, request):
        columns = super().get_list_display(request)
        several = request.user.is_superuser or len(administered_zones(request)) > 1
        return columns if several else tuple(c for c in columns if c != "subscription")

    @admin.display(description="time", ordering="timestamp")
    def time(self, event):
        """In the row's own subscription's time zone, named: people may administer several."""
        return format_moment(event.timestamp, event.subscription.zone)

    @admin.display(description="user or API key", ordering="user__email")
    def actor(self, event):
        return event.actor_label

    credits_amount = credit_column("credits", "credits")
    excess_amount = credit_column("excess_credits", "excess")

    def get_urls(self):
        adjust = self.admin_site.admin_view(self.adjustment_view)
        return [path("adjust/", adjust, name="credits_creditevent_adjust"), *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            "can_record_adjustments": request.user.is_superuser,
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context)

    def adjustment_view(self, request):
        if not request.user.is_superuser:
            raise PermissionDenied
        form = AdjustmentForm(request.POST or None)
        form.fields["subscription"].queryset = Subscription.objects.administered_by(request.user)
        if form.is_valid():
            try:
                event = record_adjustment(created_by=request.user, **form.cleaned_data)
            except IntegrityError:  # a counter's CHECK constraint: usage cannot go below zero
                form.add_error("credits", "This would take the period's usage below zero.")
            else:
                self.log_addition(request, event, [{"added": {}}])
                self.message_user(
                    request,
                    f"Recorded an adjustment of {event.credits} credits for {event.subscription}.",
                    messages.SUCCESS,
                )
                return redirect("admin:credits_creditevent_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Record a credit adjustment",
            "form": form,
        }
        return TemplateResponse(request, "admin/credits/creditevent/adjustment.html", context)


class CreditLimitForm(forms.ModelForm):
    """A limit applies to one user or one team, of the limit's own subscription."""

    def clean(self):
        cleaned_data = super().clean()
        subscription = cleaned_data.get("subscription")
        user, team = cleaned_data.get("user"), cleaned_data.get("team")
        if user and team:
            self.add_error("team", "Choose a user or a team, not both.")
        elif not user and not team and "user" not in self.errors:
            self.add_error("user", "Choose the user or the team this limit applies to.")
        if subscription and team and team.subscription_id != subscription.pk:
            self.add_error("team", "This team belongs to another subscription.")
        if (
            subscription
            and user
            and not Membership.objects.filter(user=user, subscription=subscription).exists()
        ):
            self.add_error("user", "This person has no role in this subscription.")
        return cleaned_data


@admin.register(CreditLimit)
class CreditLimitAdmin(ScopedModelAdmin):
    form = CreditLimitForm
    list_display = ("applies_to", "subscription", "credits_amount", "updated_at")
    list_filter = (("subscription", ScopedRelatedFilter),)
    list_select_related = ("subscription", "user", "team")
    search_fields = ("user__email", "team__name")
    ordering = ("subscription__name", "team__name", "user__email")
    fields = ("subscription", "user", "team", "credits")
    autocomplete_fields = ("user",)

    @admin.display(description="user or team")
    def applies_to(self, limit):
        return limit.user or f"Team {limit.team}"

    credits_amount = credit_column("credits", "credits")


# --- Alerts and webhooks ------------------------------------------------------------------


class WebhookEndpointForm(forms.ModelForm):
    def clean_url(self):
        try:
            webhooks.check_url(self.cleaned_data["url"])
        except webhooks.UnsafeWebhookUrl as refusal:
            raise ValidationError(refusal.message) from None
        return self.cleaned_data["url"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ScopedModelAdmin):
    """Endpoints: the signing secret is shown once, when made or rotated, and never again."""

    list_display = ("name", "kind", "subscription", "enabled", "failing_since", "created_at")
    list_filter = ("kind", "enabled", ("subscription", ScopedRelatedFilter))
    list_select_related = ("subscription",)
    search_fields = ("name",)
    ordering = ("subscription__name", "name")
    fields = ("subscription", "name", "kind", "url", "enabled", "failing_since", "disabled_at")
    readonly_fields = ("failing_since", "disabled_at")
    fixed_after_creation = ("subscription", "kind")
    actions = ("send_test_event", "rotate_secret")
    form = WebhookEndpointForm

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "url":
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.secret = webhooks.new_secret()
        if change and "enabled" in form.changed_data and obj.enabled:
            obj.failing_since = obj.disabled_at = None
        super().save_model(request, obj, form, change)
        if not change and obj.kind == WebhookEndpoint.Kind.WEBHOOK:
            self._show_secret(request, obj, obj.secret)

    def _show_secret(self, request, endpoint, secret):
        self.message_user(
            request,
            f"Signing secret of {endpoint.name}, shown this once: {secret}",
            messages.WARNING,
        )

    @admin.action(description="Send a test event")
    def send_test_event(self, request, queryset):
        now = timezone.now()
        sent = [webhooks.send_test_event(endpoint=endpoint, now=now) for endpoint in queryset]
        self.message_user(request, f"Sent a test event to {sum(map(len, sent))} endpoint(s).")

    @admin.action(description="Rotate the signing secret (the old one works for a day)")
    def rotate_secret(self, request, queryset):
        for endpoint in queryset.filter(kind=WebhookEndpoint.Kind.WEBHOOK):
            secret = webhooks.rotate_secret(endpoint=endpoint, now=timezone.now())
            self._show_secret(request, endpoint, secret)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, ScopedModelAdmin):
    """The delivery log: every event owed to an endpoint and how its attempts went."""

    list_display = (
        "created_at",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "response_code",
        "error",
        "delivered_at",
    )
    list_filter = ("status", "event_type", ("endpoint", ScopedRelatedFilter))
    list_select_related = ("endpoint",)
    search_fields = ("endpoint__name", "event_type")
    ordering = ("-created_at", "-id")
    fields = (
        "endpoint",
        "event_id",
        "event_type",
        "status",
        "attempts",
        "response_code",
        "error",
        "created_at",
        "last_attempt_at",
        "next_attempt_at",
        "delivered_at",
        "payload",
    )
    actions = ("redeliver",)

    @admin.action(description="Redeliver now")
    def redeliver(self, request, queryset):
        ids = webhooks.redeliver(deliveries=queryset, now=timezone.now())
        self.message_user(request, f"Queued {len(ids)} deliveries again.")


@admin.register(AlertRule)
class AlertRuleAdmin(ScopedModelAdmin):
    list_display = ("name", "target", "subscription", "thresholds", "enabled")
    list_filter = ("target", "enabled", ("subscription", ScopedRelatedFilter))
    list_select_related = ("subscription",)
    search_fields = ("name",)
    ordering = ("subscription__name", "name")
    fields = (
        "subscription",
        "name",
        "target",
        "team",
        "user",
        "thresholds",
        "email_admins",
        "email_addresses",
        "webhook",
        "slack",
        "enabled",
    )
    autocomplete_fields = ("user",)
    fixed_after_creation = ("subscription",)
