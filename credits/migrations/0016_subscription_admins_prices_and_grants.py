"""Subscription admins read prices (their plan's and their own, never set them), and add
grants and grant adjustments to their subscriptions in the admin (never change or delete
them: they are append-only). What they see is still limited by the scoping layer."""

from django.db import migrations

from accounts.migrations._group_permissions import grant

CODENAMES = [
    "view_planprice",
    "view_subscriptionprice",
    "view_creditgrant",
    "add_creditgrant",
    "view_grantadjustment",
    "add_grantadjustment",
]


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0015_money"),
        ("accounts", "0002_subscription_admins_group"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [grant("credits", CODENAMES)]
