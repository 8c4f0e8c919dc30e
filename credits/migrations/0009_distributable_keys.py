from django.conf import settings
from django.db import migrations
from django.db.models import CASCADE, PROTECT

from accounts.migrations._distributable_keys import fk, operations

AGENT = "credits.agent"
ENVIRONMENT = "accounts.environment"
PERIOD = "credits.billingperiod"
TEAM = "accounts.team"
OPTIONAL = {"blank": True, "null": True, "related_name": "+"}
UNINDEXED = {**OPTIONAL, "db_index": False}


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_distributable_keys"),
        ("credits", "0008_product_rollup_and_last_activity"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = operations(
        dropped=[
            ("teamperiodusage", "team_period_usage_unique"),
            ("thresholdalert", "threshold_alert_once_per_period"),
            ("userperiodusage", "user_period_usage_unique"),
        ],
        subscription_columns=[
            ("credits", "teamperiodusage", "credits_billingperiod", "period_id", True),
            ("credits", "userperiodusage", "credits_billingperiod", "period_id", True),
        ],
        altered=[
            ("agentrollup", "agent", fk(AGENT, CASCADE, **UNINDEXED)),
            ("agentsessionday", "agent", fk(AGENT, CASCADE, **UNINDEXED)),
            ("creditevent", "agent", fk(AGENT, PROTECT, **UNINDEXED)),
            ("creditevent", "environment", fk(ENVIRONMENT, PROTECT, **UNINDEXED)),
            ("creditevent", "period", fk(PERIOD, PROTECT, related_name="events", db_index=False)),
            ("creditlimit", "team", fk(TEAM, CASCADE, **OPTIONAL)),
            ("dailyusage", "agent", fk(AGENT, CASCADE, **OPTIONAL)),
            ("dailyusage", "environment", fk(ENVIRONMENT, CASCADE, **OPTIONAL)),
            ("dailyusage", "period", fk(PERIOD, CASCADE, related_name="+")),
            ("personrollup", "environment", fk(ENVIRONMENT, CASCADE, **UNINDEXED)),
            ("subscriptionrollup", "agent", fk(AGENT, CASCADE, **UNINDEXED)),
            ("teamperiodusage", "period", fk(PERIOD, CASCADE, related_name="+")),
            ("teamperiodusage", "team", fk(TEAM, CASCADE, related_name="+")),
            ("thresholdalert", "period", fk(PERIOD, CASCADE, related_name="alerts")),
            ("userperiodusage", "period", fk(PERIOD, CASCADE, related_name="+")),
        ],
        added=[
            ("teamperiodusage", "team_period_usage_unique", {"fields": ("subscription", "period", "team")}),
            ("thresholdalert", "threshold_alert_once_per_period", {"fields": ("subscription", "period", "threshold")}),
            ("userperiodusage", "user_period_usage_unique", {"fields": ("subscription", "period", "user")}),
        ],
    )
