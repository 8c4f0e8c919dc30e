"""Subscription admins manage their subscriptions' alert rules and webhook endpoints in the
admin and read the webhook delivery log (never edit it: it records what happened).

What they see is still limited to their own subscriptions by the scoping layer.
"""

from django.db import migrations

from accounts.migrations._group_permissions import grant

PERMISSIONS = {
    "alertrule": ["view", "add", "change", "delete"],
    "webhookendpoint": ["view", "add", "change", "delete"],
    "webhookdelivery": ["view"],
}
CODENAMES = [f"{action}_{model}" for model, actions in PERMISSIONS.items() for action in actions]


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0010_alerts_and_webhooks"),
        ("accounts", "0002_subscription_admins_group"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [grant("credits", CODENAMES)]
