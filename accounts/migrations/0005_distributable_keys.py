import uuid

from django.db import migrations, models
from django.db.models import CASCADE, PROTECT

from accounts.migrations._distributable_keys import fk, operations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_subscription_admins_read_the_audit_trail"),
    ]

    operations = operations(
        dropped=[
            ("environment", "environment_name_unique"),
            ("membership", "membership_one_role_per_environment"),
        ],
        subscription_columns=[
            ("accounts", "environment", "accounts_project", "project_id", False),
        ],
        altered=[
            ("apikey", "environment", fk("accounts.environment", CASCADE, related_name="api_keys", blank=True, null=True, help_text="Restrict the key to one environment; empty means every environment.")),
            ("apikey", "subscription", fk("accounts.subscription", CASCADE, related_name="api_keys")),
            ("environment", "project", fk("accounts.project", CASCADE, related_name="environments")),
            ("environment", "public_id", models.UUIDField(db_index=True, default=uuid.uuid4, editable=False, verbose_name="EnvironmentId")),
            ("membership", "environment", fk("accounts.environment", CASCADE, related_name="memberships", blank=True, null=True, help_text="Required for project managers and members; empty for subscription admins.")),
            ("subscription", "parent", fk("accounts.subscription", PROTECT, related_name="sub_accounts", blank=True, null=True, help_text="Set for a sub-account; its parent's admins see it too.")),
            ("teammembership", "team", fk("accounts.team", CASCADE, related_name="team_memberships")),
        ],
        added=[
            ("environment", "environment_name_unique", {"fields": ("subscription", "project", "name")}),
            ("environment", "environment_public_id_unique", {"fields": ("subscription", "public_id")}),
            ("membership", "membership_one_role_per_environment", {"fields": ("subscription", "user", "environment"), "condition": models.Q(environment__isnull=False)}),
        ],
    )
