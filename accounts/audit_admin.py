"""The audit trail in the admin: read-only, and scoped like every other admin."""

import json

from django.contrib import admin
from django.utils.html import format_html_join

from core.admin import ReadOnlyAdminMixin

from .admin_scoping import ScopedModelAdmin, ScopedRelatedFilter
from .audit import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, ScopedModelAdmin):
    list_display = ("at", "actor_label", "action", "object_type", "object_repr", "subscription")
    list_filter = ("action", "object_type", ("subscription", ScopedRelatedFilter))
    list_select_related = ("subscription",)
    search_fields = ("actor_label", "object_repr", "=object_id")
    date_hierarchy = "at"
    ordering = ("-at", "-id")
    fields = (
        "at",
        "subscription",
        "actor_label",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "changes_table",
    )
    readonly_fields = fields

    @admin.display(description="changes")
    def changes_table(self, event):
        """``field: before → after``, escaped (names and values were typed by people)."""
        return format_html_join(
            "\n",
            "<div><strong>{}</strong>: {} → {}</div>",
            (
                (name, json.dumps(before), json.dumps(after))
                for name, (before, after) in sorted(event.changes.items())
            ),
        )
