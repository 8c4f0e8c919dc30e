"""Subscription admins manage their subscriptions' alert rules and webhook endpoints in the
admin and read the webhook delivery log (never edit it: it records what happened).

What they see is still limited to their own subscriptions by the scoping layer.
"""

from django.db import migrations

from accounts.migrations._group_permissions import GRANT_DEPENDENCIES, codenames, grant

PERMISSIONS = {
    "alertrule": ["view", "add", "change", "delete"],
    "webhookendpoint": ["view", "add", "change", "delete"],
    "webhookdelivery": ["view"],
}


class Migration(migrations.Migration):
    dependencies = [("credits", "0010_alerts_and_webhooks"), *GRANT_DEPENDENCIES]

    operations = [grant("credits", codenames(PERMISSIONS))]
