"""The Django admin of subscription admins and platform staff.

What each person sees is decided in ``admin_scoping``; writes that have side effects go
through ``accounts.services``.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.urls import path, register_converter
from django.utils.html import format_html
from django.utils.translation import ngettext
from rest_framework_api_key.models import APIKey

from core.admin import credit_column

from . import audit_admin  # noqa: F401  (registers the audit trail's admin)
from .admin_scoping import (
    ScopedAdminMixin,
    ScopedModelAdmin,
    ScopedRelatedFilter,
    administered_choices,
)
from .models import (
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
from .services import (
    SUBSCRIPTION_ADMINS_GROUP,
    add_membership,
    create_api_key,
    remove_membership,
    revoke_api_key,
    sync_admin_access,
)

admin.site.site_header = "Creditdesk administration"
admin.site.site_title = "Creditdesk admin"
admin.site.index_title = "Your subscriptions, people and credits"

# Creditdesk's keys are accounts.ApiKey; the library's own concrete model stays unused.
admin.site.unregister(APIKey)


def _products():
    """The shared product catalogue, reached through the relation so that accounts does not
    import credits (the layer above it)."""
    return Subscription._meta.get_field("enabled_products").related_model.objects.order_by("name")


class SubscriptionForm(forms.ModelForm):
    """The subscription's own settings, with the AI products it uses: its admins switch them
    on and off (Global AI settings); which products exist is platform staff's business."""

    enabled_products = forms.ModelMultipleChoiceField(
        queryset=None,  # the catalogue, read per form
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label="Enabled for this subscription",
        help_text="Events of a product that is not enabled are refused "
        "(product_not_enabled); with none enabled, usage stays at zero.",
    )

    class Meta:
        model = Subscription
        fields = (
            "name",
            "plan",
            "parent",
            "timezone",
            "base_allocation",
            "limit_mode",
            "excess_allowance",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["enabled_products"].queryset = _products()
        if self.instance.pk:
            self.initial["enabled_products"] = list(self.instance.enabled_products.all())


@admin.register(Subscription)
class SubscriptionAdmin(ScopedModelAdmin):
    form = SubscriptionForm
    wide_changelist = True
    list_display = (
        "name",
        "plan",
        "parent",
        "limit_mode",
        "base_allocation_amount",
        "excess_allowance_amount",
        "timezone",
    )
    list_filter = ("plan", "limit_mode")
    list_select_related = ("parent",)
    search_fields = ("name",)
    ordering = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "plan", "parent", "timezone")}),
        ("AI products", {"fields": ("enabled_products",)}),
        (
            "Monthly credits",
            {"fields": ("base_allocation", "limit_mode", "excess_allowance")},
        ),
    )
    platform_fields = ("name", "plan", "parent", "timezone", "base_allocation")

    def get_readonly_fields(self, request, obj=None):
        """Subscription admins choose how limits behave and which products they use; the
        plan and allocation are sold."""
        return () if request.user.is_superuser else self.platform_fields

    def save_related(self, request, form, formsets, change):
        """The products are the reverse side of ``Product.enabled_for``, which a model form
        does not save; the audit trail records the change (``accounts.audit.snapshot``)."""
        super().save_related(request, form, formsets, change)
        if "enabled_products" in form.changed_data:
            form.instance.enabled_products.set(form.cleaned_data["enabled_products"])

    base_allocation_amount = credit_column("base_allocation", "base allocation")
    excess_allowance_amount = credit_column("excess_allowance", "excess allowance")


class EnvironmentInline(ScopedAdminMixin, admin.TabularInline):
    model = Environment
    fields = ("name", "public_id")
    readonly_fields = ("public_id",)
    extra = 0
    show_change_link = True


class NamedInSubscriptionAdmin(ScopedModelAdmin):
    """Projects and teams: named in a subscription that stays theirs, listed with a count of
    what each holds (``counted``: the annotation's name and the related rows it counts)."""

    counted: tuple[str, str]
    list_filter = (("subscription", ScopedRelatedFilter),)
    list_select_related = ("subscription",)
    ordering = ("subscription__name", "name")
    fields = ("subscription", "name")
    fixed_after_creation = ("subscription",)

    def get_queryset(self, request):
        name, related = self.counted
        return super().get_queryset(request).annotate(**{name: Count(related)})


@admin.register(Project)
class ProjectAdmin(NamedInSubscriptionAdmin):
    list_display = ("name", "subscription", "environment_count")
    search_fields = ("name", "subscription__name")
    inlines = (EnvironmentInline,)
    counted = ("environment_count", "environments")

    @admin.display(description="environments", ordering="environment_count")
    def environment_count(self, obj):
        return obj.environment_count


@admin.register(Environment)
class EnvironmentAdmin(ScopedModelAdmin):
    list_display = ("name", "project", "subscription", "public_id")
    list_filter = (
        ("project__subscription", ScopedRelatedFilter),
        ("project", ScopedRelatedFilter),
    )
    search_fields = ("name", "project__name", "public_id")
    ordering = ("project__subscription__name", "project__name", "name")
    fields = ("project", "name", "public_id")
    readonly_fields = ("public_id",)
    fixed_after_creation = ("project",)

    def get_queryset(self, request):
        # Every label of an environment names its project: choices and filters need it too.
        return super().get_queryset(request).select_related("project__subscription")

    @admin.display(description="subscription", ordering="project__subscription__name")
    def subscription(self, obj):
        return obj.project.subscription


@admin.register(Membership)
class MembershipAdmin(ScopedModelAdmin):
    list_display = ("user", "role", "subscription", "environment", "created_at")
    list_filter = (
        "role",
        ("subscription", ScopedRelatedFilter),
        ("environment", ScopedRelatedFilter),
    )
    list_select_related = ("user", "subscription", "environment__project")
    search_fields = ("user__email", "user__display_name")
    ordering = ("subscription__name", "user__email")
    fields = ("user", "subscription", "role", "environment")
    autocomplete_fields = ("user",)
    fixed_after_creation = ("user", "subscription")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        sync_admin_access(user=obj.user)  # staff status and the admins' group follow the role

    def delete_model(self, request, obj):
        remove_membership(membership=obj)

    def delete_queryset(self, request, queryset):
        for membership in queryset.select_related("user"):
            remove_membership(membership=membership)


class TeamMembershipFormSet(forms.BaseInlineFormSet):
    """A person belongs to at most one team of a subscription, and must work in it."""

    def clean(self):
        super().clean()
        team = self.instance
        users = [
            form.cleaned_data["user"]
            for form in self.forms
            if form.cleaned_data.get("user") and not self._should_delete_form(form)
        ]
        if len(users) != len(set(users)):
            raise ValidationError("Each person can be listed only once.")
        in_other_teams = (
            TeamMembership.objects.filter(subscription_id=team.subscription_id, user__in=users)
            .exclude(team_id=team.pk)
            .select_related("user", "team")
        )
        working_here = set(
            Membership.objects.filter(
                subscription_id=team.subscription_id, user__in=users
            ).values_list("user_id", flat=True)
        )
        errors = [f"{m.user} is already in the team {m.team}." for m in in_other_teams] + [
            f"{user} has no role in this subscription."
            for user in users
            if user.pk not in working_here
        ]
        if errors:
            raise ValidationError(errors)


class TeamMembershipInline(ScopedAdminMixin, admin.TabularInline):
    model = TeamMembership
    formset = TeamMembershipFormSet
    autocomplete_fields = ("user",)
    extra = 0
    verbose_name = "member"
    verbose_name_plural = "members"


@admin.register(Team)
class TeamAdmin(NamedInSubscriptionAdmin):
    list_display = ("name", "subscription", "member_count")
    search_fields = ("name",)
    inlines = (TeamMembershipInline,)
    counted = ("member_count", "team_memberships")

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj):
        return obj.member_count


class ApiKeyPrefix:
    """The object part of an API key's admin URLs: its public prefix, never its primary key.

    The key's primary key is ``<prefix>.<hash of the secret>`` (django-rest-framework-api-key's
    format, which the ledger's foreign keys use). Every admin link to a key (change list, recent
    actions, history, the ledger's link to its key) reverses the change URL with that primary
    key; ``to_url`` keeps the prefix, so the hash never reaches a URL, a log or a browser's
    history.
    """

    # Underscores for the placeholder ``__fk__`` that a form's link to the chosen key (an alert
    # rule's) reverses; prefixes themselves are letters and digits.
    regex = "[0-9A-Za-z_]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value) -> str:
        return str(value).partition(".")[0]


register_converter(ApiKeyPrefix, "api_key_prefix")


@admin.register(ApiKey)
class ApiKeyAdmin(ScopedModelAdmin):
    list_display = (
        "name",
        "prefix",
        "subscription",
        "environment",
        "created",
        "last_used_at",
        "revoked",
        "revoked_at",
        "credit_budget",
    )
    list_filter = (
        "revoked",
        ("subscription", ScopedRelatedFilter),
        ("environment", ScopedRelatedFilter),
    )
    list_select_related = ("subscription", "environment__project")
    search_fields = ("name", "prefix")
    ordering = ("-created",)
    add_fields = ("name", "subscription", "environment", "credit_budget")
    fields = (
        *add_fields,
        "prefix",
        "created",
        "created_by",
        "last_used_at",
        "revoked",
        "revoked_at",
    )
    readonly_fields = ("prefix", "created", "created_by", "last_used_at", "revoked", "revoked_at")
    fixed_after_creation = ("subscription", "environment")
    actions = ("revoke",)

    def get_fields(self, request, obj=None):
        return self.fields if obj else self.add_fields

    def get_urls(self):
        """The admin's own URLs, with the key named by its prefix (see ``ApiKeyPrefix``)."""
        return [
            path(
                str(pattern.pattern).replace("<path:object_id>", "<api_key_prefix:object_id>"),
                pattern.callback,
                name=pattern.name,
            )
            for pattern in super().get_urls()
        ]

    def find_object(self, request, object_id, from_field=None):
        prefix = str(object_id).partition(".")[0]
        return self.get_queryset(request).filter(prefix=prefix).first()

    def history_view(self, request, object_id, extra_context=None):
        """The admin log names the key by its primary key: look its entries up by that."""
        key = self.get_object(request, unquote(object_id))
        object_id = quote(key.pk) if key is not None else object_id
        return super().history_view(request, object_id, extra_context)

    def action_checkbox(self, obj):
        """Select keys by prefix: the change list's HTML carries no hash."""
        checkbox = forms.CheckboxInput(
            {
                "class": "action-select",
                "aria-label": format_html("Select this object for an action - {}", str(obj)),
            },
            lambda value: False,
        )
        return checkbox.render(helpers.ACTION_CHECKBOX_NAME, obj.prefix)

    def response_action(self, request, queryset):
        """Selections name keys by prefix (a full primary key is read as its prefix too)."""
        selected = [
            value.partition(".")[0] for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        ]
        if selected:
            request.POST = request.POST.copy()
            request.POST.setlist(
                helpers.ACTION_CHECKBOX_NAME,
                list(queryset.filter(prefix__in=selected).values_list("pk", flat=True)),
            )
        return super().response_action(request, queryset)

    def has_delete_permission(self, request, obj=None):
        """Keys are revoked, never deleted: the ledger names them."""
        return False

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        api_key, secret = create_api_key(
            subscription=obj.subscription,
            name=obj.name,
            environment=obj.environment,
            created_by=request.user,
            credit_budget=obj.credit_budget,
        )
        obj.pk = api_key.pk  # the admin logs the addition and redirects through ``obj``
        self.message_user(
            request,
            format_html(
                "The secret of the API key “{}” is <code>{}</code>. Copy it now: it is stored "
                "only as a hash and cannot be shown again.",
                api_key.name,
                secret,
            ),
            messages.SUCCESS,
        )

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        revoked = [
            revoke_api_key(api_key=key, actor=request.user)
            for key in queryset.filter(revoked=False)
        ]
        self.message_user(
            request,
            ngettext("Revoked %d API key.", "Revoked %d API keys.", len(revoked)) % len(revoked),
            messages.SUCCESS,
        )


class MemberCreationForm(UserCreationForm):
    """A new person together with their first role: nobody exists here outside a subscription."""

    subscription = forms.ModelChoiceField(queryset=Subscription.objects.none())
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.none(),
        required=False,
        help_text="Required for project managers and members; empty for subscription admins.",
    )
    subscriptions = Subscription.objects.none()
    environments = Environment.objects.none()

    class Meta:
        model = User
        fields = ("email", "display_name")

    @classmethod
    def limited_to(cls, *, subscriptions, environments):
        """This form with one admin user's choices (the admin gives forms no request)."""
        return type(
            cls.__name__, (cls,), {"subscriptions": subscriptions, "environments": environments}
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["subscription"].queryset = self.subscriptions
        self.fields["environment"].queryset = self.environments

    def clean(self):
        cleaned_data = super().clean()
        role = Membership(
            subscription=cleaned_data.get("subscription"),
            role=cleaned_data.get("role"),
            environment=cleaned_data.get("environment"),
        )
        try:
            role.clean()
        except ValidationError as error:
            self.add_error(None, error)
        return cleaned_data


@admin.register(User)
class UserAdmin(ScopedAdminMixin, BaseUserAdmin):
    add_form = MemberCreationForm
    add_form_template = None
    add_fieldsets = (
        (None, {"fields": ("email", "display_name", "password1", "password2")}),
        (
            "First role",
            {
                "fields": ("subscription", "role", "environment"),
                "description": "More roles can be added later under Memberships.",
            },
        ),
    )
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("display_name",)}),
        ("Access", {"fields": ("is_active",)}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    platform_fieldsets = (
        *fieldsets[:2],
        (
            "Platform permissions",
            {
                "fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions"),
            },
        ),
        fieldsets[3],
    )
    readonly_fields = ("last_login", "date_joined")
    list_display = ("email", "display_name", "is_active", "last_login")
    list_filter = ("is_active",)
    search_fields = ("email", "display_name")
    ordering = ("email",)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.add_fieldsets
        return self.platform_fieldsets if request.user.is_superuser else self.fieldsets

    def get_list_display(self, request):
        platform = ("is_staff", "is_superuser") if request.user.is_superuser else ()
        return (*self.list_display, *platform)

    def get_list_filter(self, request):
        platform = ("is_staff", "is_superuser", "groups") if request.user.is_superuser else ()
        return (*self.list_filter, *platform)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if obj is None:
            form = form.limited_to(
                subscriptions=administered_choices(self.admin_site, request, Subscription),
                environments=administered_choices(self.admin_site, request, Environment),
            )
        return form

    def has_change_permission(self, request, obj=None):
        """Someone whose sign-in opens more than these subscriptions is read-only here (a role
        elsewhere, platform permissions): changing their email or password would hand it over."""
        if not super().has_change_permission(request, obj):
            return False
        if obj is None or request.user.is_superuser:
            return True
        roles_elsewhere = Membership.objects.exclude(
            subscription__in=Subscription.objects.administered_by(request.user)
        )
        beyond = (
            Q(is_superuser=True)
            | Q(user_permissions__isnull=False)
            | Q(groups__in=Group.objects.exclude(name=SUBSCRIPTION_ADMINS_GROUP))
            | Q(memberships__in=roles_elsewhere)
        )
        return not User.objects.filter(beyond, pk=obj.pk).exists()

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            add_membership(
                user=obj,
                subscription=form.cleaned_data["subscription"],
                role=form.cleaned_data["role"],
                environment=form.cleaned_data["environment"],
            )
