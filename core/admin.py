"""What the apps' admin modules share (this module registers nothing)."""


class ReadOnlyAdminMixin:
    """Rows that only a service writes (the ledger, billing periods, deliveries, the audit
    trail): the admin shows them, and nobody adds, edits or deletes them there."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
