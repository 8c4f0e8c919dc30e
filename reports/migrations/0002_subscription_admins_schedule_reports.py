"""Subscription admins manage their subscriptions' report schedules in the admin and read the
delivery log and unsubscribes (never edit them: they record what happened).

What they see is still limited to their own subscriptions by the scoping layer.
"""

from django.db import migrations

from accounts.migrations._group_permissions import grant

PERMISSIONS = {
    "reportschedule": ["view", "add", "change", "delete"],
    "delivery": ["view"],
    "unsubscribe": ["view"],
}
CODENAMES = [f"{action}_{model}" for model, actions in PERMISSIONS.items() for action in actions]


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0001_report_schedules"),
        ("accounts", "0002_subscription_admins_group"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [grant("reports", CODENAMES)]
