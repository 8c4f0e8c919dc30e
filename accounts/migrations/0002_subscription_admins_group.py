"""The "Subscription admins" group: what a subscription admin may do in the Django admin.

Membership as a subscription admin puts a user in this group automatically
(``accounts.services.sync_admin_access``); nobody grants these permissions by hand. What they
see is still limited to their own subscription by the scoping layer.
"""

from django.db import migrations

from accounts.migrations._group_permissions import GROUP_NAME, app_permissions, codenames

PERMISSIONS = {
    "accounts": {
        "subscription": ["view", "change"],
        "project": ["view", "add", "change", "delete"],
        "environment": ["view", "add", "change", "delete"],
        "membership": ["view", "add", "change", "delete"],
        "team": ["view", "add", "change", "delete"],
        "teammembership": ["view", "add", "change", "delete"],
        "apikey": ["view", "add", "change"],
        "user": ["view", "add", "change"],
    },
    "credits": {
        "product": ["view"],
        "agent": ["view", "add", "change"],
        "billingperiod": ["view"],
        "creditevent": ["view"],
        "dailyusage": ["view"],
        "creditlimit": ["view", "add", "change", "delete"],
        "thresholdalert": ["view"],
    },
}


def create_group(apps, schema_editor):
    group, _ = apps.get_model("auth", "Group").objects.get_or_create(name=GROUP_NAME)
    group.permissions.set(
        [
            permission
            for app_label, models in PERMISSIONS.items()
            for permission in app_permissions(apps, app_label, codenames(models))
        ]
    )


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("credits", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
