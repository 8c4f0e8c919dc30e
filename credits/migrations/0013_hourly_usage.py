"""The hourly rollup (``HourlyUsage``), keyed by its subscription in the database as every
tenant table is (see reports' 0004_tenant_keys): primary key (subscription_id, id), and the
foreign keys to environments and agents composite, on (subscription_id, x_id)."""

import django.db.models.deletion
import django.db.models.functions.comparison
from django.conf import settings
from django.db import migrations, models

from credits.migrations._rollup_fields import sums


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0005_distributable_keys'),
        ('credits', '0012_alert_tenant_keys'),
        ('reports', '0004_tenant_keys'),  # the composite keys the foreign keys point at
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='HourlyUsage',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                *sums(),
                ('hour', models.DateTimeField(help_text='The start of the local hour (an instant).')),
                ('model', models.CharField(blank=True, max_length=100)),
                ('feature', models.CharField(blank=True, max_length=100)),
                ('agent', models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='credits.agent')),
                ('api_key', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.apikey')),
                ('environment', models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.environment')),
                ('product', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='credits.product')),
                ('subscription', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.subscription')),
                ('user', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name_plural': 'hourly usage',
                'constraints': [models.UniqueConstraint(models.F('subscription_id'), models.F('hour'), django.db.models.functions.comparison.Coalesce('environment_id', models.Value(0)), django.db.models.functions.comparison.Coalesce('user_id', models.Value(0)), django.db.models.functions.comparison.Coalesce('api_key_id', models.Value('')), django.db.models.functions.comparison.Coalesce('product_id', models.Value(0)), django.db.models.functions.comparison.Coalesce('agent_id', models.Value(0)), models.F('model'), models.F('feature'), name='hourly_usage_unique')],
            },
        ),
        migrations.RunSQL(
        [
            "ALTER TABLE credits_hourlyusage DROP CONSTRAINT credits_hourlyusage_pkey",
            "ALTER TABLE credits_hourlyusage ADD CONSTRAINT credits_hourlyusage_pkey "
            "PRIMARY KEY (subscription_id, id)",
            *(
                f"ALTER TABLE credits_hourlyusage ADD CONSTRAINT hourlyusage_{column}_tenant_fk "
                f"FOREIGN KEY (subscription_id, {column}) REFERENCES {target} (subscription_id, id) "
                "DEFERRABLE INITIALLY DEFERRED"
                for column, target in (
                    ("environment_id", "accounts_environment"),
                    ("agent_id", "credits_agent"),
                )
            ),
        ],
        [
            "ALTER TABLE credits_hourlyusage DROP CONSTRAINT hourlyusage_environment_id_tenant_fk",
            "ALTER TABLE credits_hourlyusage DROP CONSTRAINT hourlyusage_agent_id_tenant_fk",
            "ALTER TABLE credits_hourlyusage DROP CONSTRAINT credits_hourlyusage_pkey",
            "ALTER TABLE credits_hourlyusage ADD CONSTRAINT credits_hourlyusage_pkey PRIMARY KEY (id)",
        ],
        elidable=False,
    ),
    ]
