"""Subscription admins may read (only read) the audit trail of their subscriptions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP_NAME = "Subscription admins"


def grant_view(apps, schema_editor):
    app_config = apps.get_app_config("accounts")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP_NAME)
    group.permissions.add(
        Permission.objects.get(content_type__app_label="accounts", codename="view_auditevent")
    )


def revoke_view(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name=GROUP_NAME):
        group.permissions.remove(
            *Permission.objects.filter(
                content_type__app_label="accounts", codename="view_auditevent"
            )
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_audit_event"),
    ]

    operations = [migrations.RunPython(grant_view, revoke_view)]
