from django.db import migrations
from django.db.models import CASCADE

from accounts.migrations._distributable_keys import fk, operations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_distributable_keys"),
        ("reports", "0002_subscription_admins_schedule_reports"),
    ]

    operations = operations(
        dropped=[
            ("delivery", "delivery_once_per_period_and_recipient"),
            ("unsubscribe", "unsubscribe_once"),
        ],
        subscription_columns=[
            ("reports", "delivery", "reports_reportschedule", "schedule_id", False),
            ("reports", "unsubscribe", "reports_reportschedule", "schedule_id", False),
        ],
        altered=[
            ("delivery", "schedule", fk("reports.reportschedule", CASCADE, related_name="deliveries")),
            ("reportschedule", "environment", fk("accounts.environment", CASCADE, related_name="+", blank=True, null=True, help_text="For the environment scope only.")),
            ("unsubscribe", "schedule", fk("reports.reportschedule", CASCADE, related_name="unsubscribes")),
        ],
        added=[
            ("delivery", "delivery_once_per_period_and_recipient", {"fields": ("subscription", "schedule", "period_start", "period_end", "recipient")}),
            ("unsubscribe", "unsubscribe_once", {"fields": ("subscription", "schedule", "email")}),
        ],
    )
