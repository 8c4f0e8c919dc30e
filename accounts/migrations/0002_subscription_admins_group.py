"""The "Subscription admins" group: what a subscription admin may do in the Django admin.

Membership as a subscription admin puts a user in this group automatically
(``accounts.services.sync_admin_access``); nobody grants these permissions by hand. What they
see is still limited to their own subscription by the scoping layer.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP_NAME = "Subscription admins"

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
    # Permissions are normally created after all migrations ran; create them now.
    for app_label in PERMISSIONS:
        app_config = apps.get_app_config(app_label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP_NAME)
    codenames = [
        (app_label, f"{action}_{model}")
        for app_label, models in PERMISSIONS.items()
        for model, actions in models.items()
        for action in actions
    ]
    permissions = [
        Permission.objects.get(content_type__app_label=app_label, codename=codename)
        for app_label, codename in codenames
    ]
    group.permissions.set(permissions)


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
