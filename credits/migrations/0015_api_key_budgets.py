"""API keys' budgets: each key's credits per period (``ApiKeyPeriodUsage``, keyed by its
subscription as 0012_alert_tenant_keys keys the alert tables), and alert rules on a key's
budget."""

import django.db.models.deletion
from decimal import Decimal
from django.db import migrations, models


TABLE = "credits_apikeyperiodusage"
FORWARD = [
    f"ALTER TABLE {TABLE} DROP CONSTRAINT {TABLE}_pkey",
    f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (subscription_id, id)",
    f"CREATE INDEX {TABLE}_id_idx ON {TABLE} (id)",
    f"ALTER TABLE {TABLE} ADD CONSTRAINT apikeyperiodusage_period_id_tenant_fk "
    "FOREIGN KEY (subscription_id, period_id) REFERENCES credits_billingperiod "
    "(subscription_id, id) DEFERRABLE INITIALLY DEFERRED",
]
BACKWARD = [
    f"ALTER TABLE {TABLE} DROP CONSTRAINT apikeyperiodusage_period_id_tenant_fk",
    f"DROP INDEX {TABLE}_id_idx",
    f"ALTER TABLE {TABLE} DROP CONSTRAINT {TABLE}_pkey",
    f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id)",
]


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0006_api_key_credit_budget'),
        ('credits', '0014_alert_rule_excess_target'),
    ]

    operations = [
        migrations.AddField(
            model_name='alertrule',
            name='api_key',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.apikey', verbose_name='API key'),
        ),
        migrations.AlterField(
            model_name='alertrule',
            name='target',
            field=models.CharField(choices=[('allocation', "The subscription's base allocation"), ('excess_allowance', "The subscription's excess allowance (soft mode)"), ('team', "A team's limit"), ('user', "A user's limit"), ('api_key', "An API key's budget")], max_length=20),
        ),
        migrations.CreateModel(
            name='ApiKeyPeriodUsage',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('credits_used', models.DecimalField(decimal_places=4, default=Decimal('0'), max_digits=18)),
                ('api_key', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.apikey')),
                ('period', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='credits.billingperiod')),
                ('subscription', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.subscription')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('subscription', 'period', 'api_key'), name='api_key_period_usage_unique'), models.CheckConstraint(condition=models.Q(('credits_used__gte', 0)), name='api_key_period_usage_not_negative')],
            },
        ),
        migrations.RunSQL(FORWARD, BACKWARD, elidable=False),
    ]
