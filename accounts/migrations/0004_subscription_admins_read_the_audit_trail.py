"""Subscription admins may read (only read) the audit trail of their subscriptions."""

from django.db import migrations

from accounts.migrations._group_permissions import grant


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_audit_event"),
    ]

    operations = [grant("accounts", ["view_auditevent"])]
