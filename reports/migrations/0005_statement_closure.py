"""The claim that a period's statement was announced once (``StatementClosure``), keyed by its
subscription in the database as every tenant table is (see 0004_tenant_keys): primary key
(subscription_id, id), and the foreign key to the period composite, on (subscription_id,
period_id)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0005_distributable_keys'),
        ('credits', '0014_alert_rule_excess_target'),
        ('reports', '0004_tenant_keys'),
    ]

    operations = [
        migrations.CreateModel(
            name='StatementClosure',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('closed_at', models.DateTimeField(help_text="The end of the period's grace window.")),
                ('announced_at', models.DateTimeField()),
                ('period', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='credits.billingperiod')),
                ('subscription', models.ForeignKey(db_index=False, editable=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.subscription')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('subscription', 'period'), name='statement_closed_once')],
            },
        ),
        migrations.RunSQL(
            [
                "ALTER TABLE reports_statementclosure DROP CONSTRAINT reports_statementclosure_pkey",
                "ALTER TABLE reports_statementclosure ADD CONSTRAINT reports_statementclosure_pkey "
                "PRIMARY KEY (subscription_id, id)",
                "ALTER TABLE reports_statementclosure ADD CONSTRAINT statementclosure_period_id_tenant_fk "
                "FOREIGN KEY (subscription_id, period_id) REFERENCES credits_billingperiod (subscription_id, id) "
                "DEFERRABLE INITIALLY DEFERRED",
            ],
            [
                "ALTER TABLE reports_statementclosure DROP CONSTRAINT statementclosure_period_id_tenant_fk",
                "ALTER TABLE reports_statementclosure DROP CONSTRAINT reports_statementclosure_pkey",
                "ALTER TABLE reports_statementclosure ADD CONSTRAINT reports_statementclosure_pkey PRIMARY KEY (id)",
            ],
            elidable=False,
        ),
    ]
