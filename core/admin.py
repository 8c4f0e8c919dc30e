"""What the apps' admin modules share (this module registers nothing)."""

from django.contrib import admin

from .display import format_credits


def credit_column(field: str, description: str):
    """A changelist column showing ``field`` in the one credit format, sorted by the field."""

    @admin.display(description=description, ordering=field)
    def column(self, obj):
        return format_credits(getattr(obj, field))

    return column


class ReadOnlyAdminMixin:
    """Rows that only a service writes (the ledger, billing periods, deliveries, the audit
    trail): the admin shows them, and nobody adds, edits or deletes them there."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
