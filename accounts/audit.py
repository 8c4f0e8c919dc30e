"""The audit trail: who changed a limit, a role, an API key or a schedule, when, and how.

One ``AuditEvent`` row per change, written in the same transaction as the change by the
services that make it (limits, API keys, limit settings) and, for everything changed in the
Django admin without such a service, by ``AuditedAdminMixin`` (part of every scoped admin).
Each row names its subscription, so the subscription's admins read their own trail in the
admin, scoped like everything else; rows without a subscription (the shared product
catalogue) are platform staff's.

Rows are never edited or deleted by the application. Secrets never enter them: an API key is
named by its prefix, passwords and key hashes are left out of admin changes.
"""

from contextlib import contextmanager
from contextvars import ContextVar

from django.apps import apps
from django.conf import settings
from django.db import models
from django.utils import timezone

from .scoping import AdministeredQuerySet

# Fields whose values must not be copied into the trail, whatever the model.
SECRET_FIELDS = frozenset({"password", "hashed_key"})

# The objects audited so far in the current admin request, so that the admin's own record of
# a change a service already audited is not written twice.
_recorded = ContextVar("audit_recorded", default=None)


class AuditEventQuerySet(AdministeredQuerySet):
    """Admins read the trail of the subscriptions they administer (sub-accounts included)."""

    def key_visibility(self, api_key) -> models.Q:
        return models.Q(pk__in=[])  # the trail is people's business


class AuditEvent(models.Model):
    subscription = models.ForeignKey(
        "accounts.Subscription",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty for platform-wide changes (the product catalogue).",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who made the change; empty when a person no longer exists or a task did it.",
    )
    actor_label = models.CharField(
        max_length=254, blank=True, help_text="The actor's email when the change was made."
    )
    action = models.CharField(max_length=50, help_text="e.g. limit.set, api_key.revoked")
    object_type = models.CharField(max_length=100, help_text="app_label.model")
    object_id = models.CharField(max_length=100, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(
        default=dict, blank=True, help_text="Field name: [before, after], as text."
    )
    at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        app_label = "accounts"
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["subscription", "at"], name="audit_subscription_at_idx")]

    def __str__(self) -> str:
        return f"{self.actor_label or 'system'} {self.action} {self.object_repr}"


def _text(value) -> str | None:
    return None if value is None else str(value)


def _object_id(obj: models.Model) -> str:
    """The object's id as people see it; an API key's primary key embeds its hash, so a key
    is named by its public prefix instead."""
    if obj._meta.label_lower == "accounts.apikey":
        return obj.prefix or str(obj.pk or "").partition(".")[0]  # the pk is "<prefix>.<hash>"
    return str(obj.pk or "")


def record_audit_event(
    *,
    subscription,
    actor,
    action: str,
    obj: models.Model,
    changes: dict | None = None,
) -> AuditEvent:
    """Write one row of the trail; call it inside the transaction of the change."""
    actor = actor if getattr(actor, "pk", None) else None  # an API key or nobody: no person
    event = AuditEvent.objects.create(
        subscription=subscription,
        actor=actor,
        actor_label=actor.email if actor else "",
        action=action,
        object_type=obj._meta.label_lower,
        object_id=_object_id(obj),
        object_repr=str(obj)[:200],
        changes={
            name: [_text(before), _text(after)] for name, (before, after) in (changes or {}).items()
        },
    )
    recorded = _recorded.get()
    if recorded is not None:
        recorded.add((event.object_type, event.object_id))
    return event


@contextmanager
def _recording():
    token = _recorded.set(set())
    try:
        yield
    finally:
        _recorded.reset(token)


# --- The Django admin's changes ---------------------------------------------------------------


def snapshot(obj: models.Model) -> dict[str, str | None]:
    """The editable, non-secret field values of ``obj``, as text (related objects by name)."""
    values = {}
    for field in obj._meta.concrete_fields:
        if not field.editable or field.primary_key or field.name in SECRET_FIELDS:
            continue
        if field.is_relation:
            value = getattr(obj, field.name, None)
        else:
            value = field.value_from_object(obj)
        values[field.name] = _text(value)
    if obj._meta.label_lower == "accounts.user" and obj.pk:
        # A person's roles are their access: the trail shows them with every change.
        values["roles"] = "; ".join(sorted(str(m) for m in obj.memberships.all())) or None
    if obj._meta.label_lower == "accounts.subscription" and obj.pk:
        # Which AI products it may use: its admins switch them on and off.
        names = obj.enabled_products.order_by("name").values_list("name", flat=True)
        values["enabled_products"] = ", ".join(names) or None
    return values


def save_audited(obj: models.Model, *, actor, noun: str) -> models.Model:
    """Validate (``full_clean``: the model's rules) and save a subscription's ``obj``; an
    ``actor``'s change goes into the trail as ``<noun>.created`` or ``<noun>.changed`` with
    what changed. For services, inside their transaction."""
    obj.full_clean()
    created = obj.pk is None
    stored = None if created else type(obj)._default_manager.filter(pk=obj.pk).first()
    before = {} if stored is None else snapshot(stored)
    obj.save()
    changes = changed(before, snapshot(obj))
    if changes:
        record_audit_event(
            subscription=obj.subscription,
            actor=actor,
            action=f"{noun}.{'created' if created else 'changed'}",
            obj=obj,
            changes=changes,
        )
    return obj


def delete_audited(obj: models.Model, *, actor, noun: str) -> None:
    """Delete a subscription's ``obj``, in the trail as ``<noun>.deleted`` with what it was."""
    record_audit_event(
        subscription=obj.subscription,
        actor=actor,
        action=f"{noun}.deleted",
        obj=obj,
        changes=changed(snapshot(obj), {}),
    )
    obj.delete()


def changed(before: dict, after: dict) -> dict[str, tuple]:
    names = [*before, *(name for name in after if name not in before)]
    return {
        name: (before.get(name), after.get(name))
        for name in names
        if before.get(name) != after.get(name)
    }


def subscriptions_of(obj: models.Model, actor) -> list:
    """The subscriptions ``obj`` belongs to, among those ``actor`` administers.

    The path to them is the scoping layer's (``subscription_lookup``): a person (``User``)
    belongs to every subscription they hold a role in, and each of those the actor administers
    gets the row. An object that belongs to no subscription (the product catalogue) gets one
    row without a subscription.
    """
    # Looked up, not imported: ``accounts.models`` imports this module to register AuditEvent.
    Subscription = apps.get_model("accounts", "Subscription")
    rows = type(obj)._default_manager.filter(pk=obj.pk)
    path = getattr(rows, "subscription_lookup", None)
    if path is None:
        return [None]
    ids = [pk for pk in rows.values_list(path, flat=True) if pk is not None]
    subscriptions = Subscription.objects.administered_by(actor).filter(pk__in=ids)
    return list(subscriptions) or ([None] if not ids else [])


class AuditedAdminMixin:
    """Records every addition, change and deletion made in a (scoped) admin in the trail.

    Django's own ``LogEntry`` keeps the admin's history but names no subscription, so a
    subscription admin cannot be shown their own. Changes made through a service that audits
    them itself (creating an API key) are not recorded twice.
    """

    def get_object(self, request, object_id, from_field=None):
        obj = self.find_object(request, object_id, from_field)
        if obj is not None:
            request._audit_before = {_object_id(obj): snapshot(obj)}
        return obj

    def find_object(self, request, object_id, from_field=None):
        """The object a URL names; an admin whose URLs name objects otherwise overrides this,
        so that its changes are still compared with the object as it was."""
        return super().get_object(request, object_id, from_field)

    def changeform_view(self, request, *args, **kwargs):
        with _recording():
            return super().changeform_view(request, *args, **kwargs)

    def _audit(self, request, obj, action: str, changes: dict) -> None:
        if (obj._meta.label_lower, _object_id(obj)) in (_recorded.get() or ()):
            return  # the service that made the change recorded it
        for subscription in subscriptions_of(obj, request.user):
            record_audit_event(
                subscription=subscription,
                actor=request.user,
                action=action,
                obj=obj,
                changes=changes,
            )

    def log_addition(self, request, obj, message):
        entry = super().log_addition(request, obj, message)
        self._audit(request, obj, "admin.added", changed({}, snapshot(obj)))
        return entry

    def log_change(self, request, obj, message):
        entry = super().log_change(request, obj, message)
        before = getattr(request, "_audit_before", {}).get(_object_id(obj), {})
        changes = changed(before, snapshot(obj))
        if not changes:  # only inlines changed: say which, as the admin's history does
            changes = {"related": (None, str(message)[:500])}
        self._audit(request, obj, "admin.changed", changes)
        return entry

    def log_deletions(self, request, queryset):
        entries = super().log_deletions(request, queryset)
        for obj in queryset:  # called before the deletion: the objects still exist
            self._audit(request, obj, "admin.deleted", changed(snapshot(obj), {}))
        return entries
