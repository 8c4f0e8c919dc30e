"""Subscription admins manage their subscriptions' report schedules in the admin and read the
delivery log and unsubscribes (never edit them: they record what happened).

What they see is still limited to their own subscriptions by the scoping layer.
"""

from django.db import migrations

from accounts.migrations._group_permissions import GRANT_DEPENDENCIES, codenames, grant

PERMISSIONS = {
    "reportschedule": ["view", "add", "change", "delete"],
    "delivery": ["view"],
    "unsubscribe": ["view"],
}


class Migration(migrations.Migration):
    dependencies = [("reports", "0001_report_schedules"), *GRANT_DEPENDENCIES]

    operations = [grant("reports", codenames(PERMISSIONS))]
