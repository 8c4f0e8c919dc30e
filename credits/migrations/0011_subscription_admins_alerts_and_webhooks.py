"""Subscription admins manage their subscriptions' alert rules and webhook endpoints in the
admin and read the webhook delivery log (never edit it: it records what happened).

What they see is still limited to their own subscriptions by the scoping layer.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP_NAME = "Subscription admins"

PERMISSIONS = {
    "alertrule": ["view", "add", "change", "delete"],
    "webhookendpoint": ["view", "add", "change", "delete"],
    "webhookdelivery": ["view"],
}
CODENAMES = [f"{action}_{model}" for model, actions in PERMISSIONS.items() for action in actions]


def grant(apps, schema_editor):
    # Permissions are normally created after all migrations ran; create them now.
    app_config = apps.get_app_config("credits")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permissions = list(
        Permission.objects.filter(content_type__app_label="credits", codename__in=CODENAMES)
    )
    if len(permissions) != len(CODENAMES):
        raise RuntimeError(f"Missing alert permissions: expected {CODENAMES}.")
    group, _ = Group.objects.get_or_create(name=GROUP_NAME)
    group.permissions.add(*permissions)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name=GROUP_NAME):
        group.permissions.remove(
            *Permission.objects.filter(content_type__app_label="credits", codename__in=CODENAMES)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0010_alerts_and_webhooks"),
        ("accounts", "0002_subscription_admins_group"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
