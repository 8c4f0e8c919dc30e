"""Granting the "Subscription admins" group its permissions, for the migrations that do.

Part of the migration history, not live code: the loader skips modules starting with ``_``, and
nothing outside the migrations imports this one. Change it only together with a new migration.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP_NAME = "Subscription admins"
# What a migration that grants needs to have run: the group's migration, and the permission and
# content type tables as they are now.
GRANT_DEPENDENCIES = [
    ("accounts", "0002_subscription_admins_group"),
    ("auth", "0012_alter_user_first_name_max_length"),
    ("contenttypes", "0002_remove_content_type_name"),
]


def codenames(permissions: dict[str, list[str]]) -> list[str]:
    """``{"team": ["view", "add"]}`` as the codenames view_team and add_team."""
    return [f"{action}_{model}" for model, actions in permissions.items() for action in actions]


def app_permissions(apps, app_label: str, codenames) -> list:
    """The permissions of ``app_label`` named by ``codenames``, created first: Django creates
    permissions after all migrations ran."""
    app_config = apps.get_app_config(app_label)
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    permissions = list(
        Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
    )
    if len(permissions) != len(set(codenames)):
        raise RuntimeError(f"Missing {app_label} permissions: expected {sorted(codenames)}.")
    return permissions


def grant(app_label: str, codenames) -> migrations.RunPython:
    """Add the permissions to the group (creating it if missing); backwards, remove them."""

    def forwards(apps, schema_editor):
        group, _ = apps.get_model("auth", "Group").objects.get_or_create(name=GROUP_NAME)
        group.permissions.add(*app_permissions(apps, app_label, codenames))

    def backwards(apps, schema_editor):
        Permission = apps.get_model("auth", "Permission")
        for group in apps.get_model("auth", "Group").objects.filter(name=GROUP_NAME):
            group.permissions.remove(
                *Permission.objects.filter(
                    content_type__app_label=app_label, codename__in=codenames
                )
            )

    return migrations.RunPython(forwards, backwards)
