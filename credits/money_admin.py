"""Prices and grants in the admin. Both are append-only: added through their services (which
check them and write the audit trail), never changed or deleted here.

Platform staff set plan prices and subscriptions' own prices; a subscription admin reads them.
Platform staff and subscription admins add grants to the subscriptions they administer, and
correct them with adjustments.
"""

from django import forms
from django.contrib import admin
from django.db import models, transaction

from accounts.admin_scoping import ScopedModelAdmin, ScopedRelatedFilter
from core.errors import DomainError
from core.money import CreditsFormField

from .grants import (
    GRANT_COUNTERS,
    GRANT_FIELDS,
    adjust_grant,
    check_grant,
    check_plan_price,
    check_subscription_price,
    set_plan_price,
    set_subscription_price,
)
from .grants import add_grant as add_grant_service
from .models import CreditGrant, GrantAdjustment, PlanPrice, SubscriptionPrice

PRICE_FIELDS = {models.DecimalField: {"form_class": forms.DecimalField}}


class ServiceForm(forms.ModelForm):
    """A form whose ``clean`` asks the service's check, so a refusal shows on the form."""

    request = None  # set by the admin

    def check(self, data: dict) -> dict:
        raise NotImplementedError

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            self.checked = self.check(data)
        except DomainError as refusal:
            field = refusal.details.get("field")
            raise forms.ValidationError(
                {field: refusal.message} if field in self.fields else refusal.message
            ) from None
        return data


class AppendOnlyAdmin(ScopedModelAdmin):
    """Added once through the form's service; never changed or deleted."""

    form_class: type[ServiceForm]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        form.request = request
        return form

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            created = self.create(request, form.cleaned_data)
        obj.pk = created.pk
        obj._state.adding = False


# --- Prices ----------------------------------------------------------------------------------

# A price's own fields, after whose it is (a plan's or a subscription's).
PRICE_COLUMNS = ("currency", "credit_price", "excess_price", "effective_from")


class PriceAdmin(AppendOnlyAdmin):
    """Prices: platform staff add them."""

    formfield_overrides = PRICE_FIELDS

    def has_add_permission(self, request):
        return request.user.is_superuser


class PlanPriceForm(ServiceForm):
    class Meta:
        model = PlanPrice
        fields = ("plan", *PRICE_COLUMNS)

    def check(self, data):
        return check_plan_price(created_by=self.request.user, **data)


@admin.register(PlanPrice)
class PlanPriceAdmin(PriceAdmin):
    form = PlanPriceForm
    list_display = ("plan", *PRICE_COLUMNS)
    list_filter = ("plan", "currency")
    ordering = ("plan", "-effective_from")

    def get_readonly_fields(self, request, obj=None):
        """Who set a price is platform staff's business."""
        return ("created_by", "created_at") if request.user.is_superuser else ("created_at",)

    def get_queryset(self, request):
        """The price list: everyone who may open the admin reads it."""
        return PlanPrice.objects.visible_to(request.user)

    def create(self, request, data):
        return set_plan_price(created_by=request.user, **data)


class SubscriptionPriceForm(ServiceForm):
    class Meta:
        model = SubscriptionPrice
        fields = ("subscription", *PRICE_COLUMNS)

    def check(self, data):
        return check_subscription_price(created_by=self.request.user, **data)


@admin.register(SubscriptionPrice)
class SubscriptionPriceAdmin(PriceAdmin):
    form = SubscriptionPriceForm
    list_display = ("subscription", *PRICE_COLUMNS)
    list_filter = (("subscription", ScopedRelatedFilter), "currency")
    list_select_related = ("subscription",)
    ordering = ("subscription__name", "-effective_from")
    readonly_fields = ("created_by", "created_at")

    def create(self, request, data):
        return set_subscription_price(created_by=request.user, **data)


# --- Grants ----------------------------------------------------------------------------------


class CreditGrantForm(ServiceForm):
    credits = CreditsFormField(help_text="Credits granted, above 0.")
    price = forms.DecimalField(
        min_value=0,
        max_digits=18,
        decimal_places=6,
        initial=0,
        help_text="The total paid, in the currency (0 for a bonus).",
    )

    class Meta:
        model = CreditGrant
        fields = ("subscription", *GRANT_FIELDS)

    def check(self, data):
        return check_grant(**data)


class AdjustmentInline(admin.TabularInline):
    model = GrantAdjustment
    fields = ("kind", "credits", "at", "reason", "created_by")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(CreditGrant)
class CreditGrantAdmin(AppendOnlyAdmin):
    form = CreditGrantForm
    inlines = (AdjustmentInline,)
    list_display = (
        "subscription",
        "kind",
        "credits",
        "credits_used",
        "remaining_credits",
        "price",
        "currency",
        "effective_at",
        "expires_at",
    )
    list_filter = ("kind", ("subscription", ScopedRelatedFilter))
    list_select_related = ("subscription",)
    ordering = ("-effective_at", "-id")
    readonly_fields = ("created_by", "created_at", *GRANT_COUNTERS)

    @admin.display(description="remaining")
    def remaining_credits(self, grant):
        return grant.remaining

    def create(self, request, data):
        return add_grant_service(created_by=request.user, **data)


class GrantAdjustmentForm(ServiceForm):
    credits = CreditsFormField(signed=True, help_text="Positive adds, negative takes away.")

    class Meta:
        model = GrantAdjustment
        fields = ("grant", "credits", "reason")

    def check(self, data):
        """What ``adjust_grant`` refuses, asked before it runs (it checks again, locked)."""
        grant, credits = data["grant"], data["credits"]
        if not credits:
            raise DomainError("An adjustment of zero credits changes nothing.", field="credits")
        if grant.credits_lapsed or grant.remaining + credits < 0:
            raise DomainError(
                "A grant cannot give back credits it has used, nor change once lapsed.",
                field="credits",
            )
        return data


@admin.register(GrantAdjustment)
class GrantAdjustmentAdmin(AppendOnlyAdmin):
    form = GrantAdjustmentForm
    list_display = ("subscription", "grant", "kind", "credits", "at", "reason", "created_by")
    list_select_related = ("subscription", "grant", "created_by")
    list_filter = ("kind", ("subscription", ScopedRelatedFilter))
    ordering = ("-at", "-id")
    readonly_fields = ("subscription", "kind", "at", "created_by", "created_at")

    def create(self, request, data):
        return adjust_grant(created_by=request.user, **data)
