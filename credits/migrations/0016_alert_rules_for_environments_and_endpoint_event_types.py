"""Project managers' alert rules on an environment (with an optional budget and an owner), and
the event types a webhook endpoint subscribes to. The rule's environment is referenced by
(subscription_id, environment_id), as every tenant foreign key (0012_alert_tenant_keys)."""

import django.contrib.postgres.fields
import django.core.validators
import django.db.models.deletion
from decimal import Decimal
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0006_api_key_credit_budget'),
        ('credits', '0015_api_key_budgets'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='alertrule',
            name='budget',
            field=models.DecimalField(blank=True, decimal_places=4, help_text="Environments: the credits per period the thresholds are percentages of; empty: the subscription's base allocation.", max_digits=18, null=True, validators=[django.core.validators.MinValueValidator(Decimal('0.0001'))]),
        ),
        migrations.AddField(
            model_name='alertrule',
            name='environment',
            field=models.ForeignKey(blank=True, db_constraint=False, help_text='For an environment rule.', null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.environment'),
        ),
        migrations.AddField(
            model_name='alertrule',
            name='owner',
            field=models.ForeignKey(blank=True, help_text="The project manager whose rule this is (it emails the environment's people only); empty: a rule of the subscription's admins.", null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='webhookendpoint',
            name='event_types',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=50), blank=True, default=list, help_text='The events posted to it; none chosen: every event.', size=None),
        ),
        migrations.AlterField(
            model_name='alertrule',
            name='target',
            field=models.CharField(choices=[('allocation', "The subscription's base allocation"), ('excess_allowance', "The subscription's excess allowance (soft mode)"), ('team', "A team's limit"), ('user', "A user's limit"), ('api_key', "An API key's budget"), ('environment', "An environment's credits")], max_length=20),
        ),
        migrations.RunSQL(
            "ALTER TABLE credits_alertrule ADD CONSTRAINT alertrule_environment_id_tenant_fk "
            "FOREIGN KEY (subscription_id, environment_id) "
            "REFERENCES accounts_environment (subscription_id, id) DEFERRABLE INITIALLY DEFERRED",
            "ALTER TABLE credits_alertrule DROP CONSTRAINT alertrule_environment_id_tenant_fk",
            elidable=False,
        ),
    ]
