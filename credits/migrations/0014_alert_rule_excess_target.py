"""Alert rules may watch the excess allowance (soft mode): a new choice, no schema change."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("credits", "0013_hourly_usage")]

    operations = [
        migrations.AlterField(
            model_name="alertrule",
            name="target",
            field=models.CharField(
                choices=[
                    ("allocation", "The subscription's base allocation"),
                    ("excess_allowance", "The subscription's excess allowance (soft mode)"),
                    ("team", "A team's limit"),
                    ("user", "A user's limit"),
                ],
                max_length=20,
            ),
        ),
    ]
