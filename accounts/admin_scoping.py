"""How the Django admin applies the scoping layer, in one place.

In the admin a subscription admin works on ``Model.objects.administered_by(user)``: the rows
of their subscriptions and those subscriptions' sub-accounts, as each model's queryset defines
it (``accounts.scoping``); platform superusers work on everything. This is ``administered_by``
rather than ``visible_to`` on purpose: ``visible_to`` also shows an admin the environments
where they are merely a member or project manager of someone else's subscription, and those
must not become editable here.

Everything in the admin that lists objects goes through ``get_queryset``: changelists, change,
history and delete views, actions and autocomplete (``AutocompleteJsonView`` searches the
related admin's ``get_queryset``). Foreign-key and many-to-many choices and list filters offer
what the related model's admin shows, so each admin is scoped once and reused everywhere.
"""

from django.contrib import admin
from django.db import models

from core.money import CreditsFormField

from .audit import AuditedAdminMixin
from .models import Subscription


def administered_zones(request) -> list[str]:
    """The time zone of each subscription ``request.user`` administers (one entry each), read
    once per request: the admin's time zone and its subscription column both ask."""
    if not hasattr(request, "_administered_zones"):
        request._administered_zones = list(
            Subscription.objects.administered_by(request.user)
            .order_by()
            .values_list("timezone", flat=True)
        )
    return request._administered_zones


def administered_choices(admin_site: admin.AdminSite, request, model) -> models.QuerySet:
    """What ``request.user`` may choose from ``model``: exactly what its admin shows them.

    A model whose admin is not scoped offers nothing to anyone but superusers.
    """
    if admin_site.is_registered(model):
        model_admin = admin_site.get_model_admin(model)
        if isinstance(model_admin, ScopedAdminMixin):
            return model_admin.get_queryset(request)
    if request.user.is_superuser:
        return model._default_manager.all()
    return model._default_manager.none()


class ScopedAdminMixin(AuditedAdminMixin):
    """Limits a model admin (or inline) to what the logged-in user manages, and records its
    changes in the audit trail (``accounts.audit``).

    The model's queryset says what a person administers (``administered_by``); no admin states
    a path of its own. ``fixed_after_creation`` lists
    fields that become read-only once the object exists (moving a project to another
    subscription would strand its environments' memberships).
    """

    fixed_after_creation: tuple[str, ...] = ()
    # Lists with many columns hide the navigation sidebar, so that their columns fit 1400 px
    # without sideways scrolling (the breadcrumbs and the index still lead everywhere).
    wide_changelist = False
    # Every decimal in the models is an amount of credits: read strictly (core.money).
    formfield_overrides = {models.DecimalField: {"form_class": CreditsFormField}}

    def get_queryset(self, request):
        return super().get_queryset(request).administered_by(request.user)

    def changelist_view(self, request, extra_context=None):
        if self.wide_changelist:
            extra_context = {**(extra_context or {}), "is_nav_sidebar_enabled": False}
        return super().changelist_view(request, extra_context)

    def get_readonly_fields(self, request, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        return readonly + self.fixed_after_creation if obj else readonly

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        kwargs.setdefault(
            "queryset", administered_choices(self.admin_site, request, db_field.related_model)
        )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        kwargs.setdefault(
            "queryset", administered_choices(self.admin_site, request, db_field.related_model)
        )
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        """Preselect the subscription when there is only one to choose."""
        initial = super().get_changeform_initial_data(request)
        subscriptions = list(administered_choices(self.admin_site, request, Subscription)[:2])
        if len(subscriptions) == 1:
            initial.setdefault("subscription", subscriptions[0].pk)
        return initial


class ScopedModelAdmin(ScopedAdminMixin, admin.ModelAdmin):
    pass


class ScopedRelatedFilter(admin.RelatedFieldListFilter):
    """A related-field filter offering only the objects this user manages.

    The plain related filter lists every row of the related table, other tenants' included;
    ``RelatedOnlyFieldListFilter`` is safe but scans the changelist with ``DISTINCT``, which is
    slow on the ledger. This one asks the related model's (scoped) admin instead.
    """

    def field_choices(self, field, request, model_admin):
        related = administered_choices(model_admin.admin_site, request, field.related_model)
        return [(obj.pk, str(obj)) for obj in related]
