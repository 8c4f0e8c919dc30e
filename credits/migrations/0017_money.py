"""Money (issue 21): prices (a plan's, a subscription's own), credit grants and their
adjustments, each event's grant credits and cost on the ledger and in every rollup, and the
period's grant counter. The tenant tables are keyed by their subscription as every tenant
table is (see 0012_alert_tenant_keys); plan prices are a reference table."""

import django.core.validators
import django.db.models.deletion
import django.db.models.expressions
from decimal import Decimal
from django.conf import settings
from django.db import migrations, models

from credits.migrations._rollup_fields import money

ROLLUPS = (
    "agentrollup",
    "dailyusage",
    "hourlyusage",
    "modelrollup",
    "personrollup",
    "productrollup",
    "subscriptionrollup",
)
TABLES = ("credits_subscriptionprice", "credits_creditgrant", "credits_grantadjustment")


def _primary_key(table: str, columns: str) -> list[str]:
    return [
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({columns})",
    ]


FORWARD = [
    *(sql for table in TABLES for sql in _primary_key(table, "subscription_id, id")),
    *(f"CREATE INDEX {table}_id_idx ON {table} (id)" for table in TABLES),
    "ALTER TABLE credits_grantadjustment ADD CONSTRAINT grantadjustment_grant_id_tenant_fk "
    "FOREIGN KEY (subscription_id, grant_id) REFERENCES credits_creditgrant (subscription_id, id) "
    "DEFERRABLE INITIALLY DEFERRED",
]
BACKWARD = [
    "ALTER TABLE credits_grantadjustment DROP CONSTRAINT grantadjustment_grant_id_tenant_fk",
    *(f"DROP INDEX {table}_id_idx" for table in TABLES),
    *(sql for table in TABLES for sql in _primary_key(table, "id")),
]


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0005_distributable_keys'),
        ('credits', '0016_alert_rules_for_environments_and_endpoint_event_types'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='CreditGrant',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('top_up', 'Top-up (purchased)'), ('bonus', 'Bonus (free)')], max_length=10)),
                ('credits', models.DecimalField(decimal_places=4, max_digits=18)),
                ('price', models.DecimalField(decimal_places=6, default=Decimal('0'), help_text='The total paid for it, in the currency (0 for a bonus).', max_digits=18)),
                ('currency', models.CharField(blank=True, max_length=3, help_text='ISO 4217, e.g. EUR.')),
                ('effective_at', models.DateTimeField(help_text='Usable from this instant on.')),
                ('expires_at', models.DateTimeField(blank=True, help_text='Empty: never expires. Its remainder lapses then.', null=True)),
                ('reason', models.TextField()),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('credits_used', models.DecimalField(decimal_places=4, default=Decimal('0'), editable=False, max_digits=18)),
                ('credits_lapsed', models.DecimalField(decimal_places=4, default=Decimal('0'), editable=False, max_digits=18)),
                ('credits_adjusted', models.DecimalField(decimal_places=4, default=Decimal('0'), editable=False, max_digits=18)),
            ],
            options={
                'ordering': ['subscription', '-effective_at', '-id'],
            },
        ),
        migrations.CreateModel(
            name='GrantAdjustment',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('adjustment', 'Adjustment'), ('lapse', 'Lapse of the remainder at expiry')], default='adjustment', max_length=10)),
                ('credits', models.DecimalField(decimal_places=4, help_text='Signed: negative takes away.', max_digits=18)),
                ('at', models.DateTimeField(help_text="When it takes effect (a lapse: the grant's expiry).")),
                ('reason', models.TextField()),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'ordering': ['subscription', '-at', '-id'],
            },
        ),
        migrations.CreateModel(
            name='PlanPrice',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('currency', models.CharField(help_text='ISO 4217, e.g. EUR.', max_length=3)),
                ('credit_price', models.DecimalField(decimal_places=6, help_text='Per base credit.', max_digits=18, validators=[django.core.validators.MinValueValidator(0)])),
                ('excess_price', models.DecimalField(decimal_places=6, help_text='Per excess credit.', max_digits=18, validators=[django.core.validators.MinValueValidator(0)])),
                ('effective_from', models.DateTimeField(help_text='Applies to events from this instant on.')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('plan', models.CharField(choices=[('free', 'Free'), ('pro', 'Pro'), ('premium', 'Premium'), ('scale', 'Scale')], max_length=20)),
            ],
            options={
                'ordering': ['plan', '-effective_from'],
            },
        ),
        migrations.CreateModel(
            name='SubscriptionPrice',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('currency', models.CharField(help_text='ISO 4217, e.g. EUR.', max_length=3)),
                ('credit_price', models.DecimalField(decimal_places=6, help_text='Per base credit.', max_digits=18, validators=[django.core.validators.MinValueValidator(0)])),
                ('excess_price', models.DecimalField(decimal_places=6, help_text='Per excess credit.', max_digits=18, validators=[django.core.validators.MinValueValidator(0)])),
                ('effective_from', models.DateTimeField(help_text='Applies to events from this instant on.')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'ordering': ['subscription', '-effective_from'],
            },
        ),
        *(
            migrations.AddField(model_name=rollup, name=name, field=field)
            for rollup in ROLLUPS
            for name, field in money()
        ),
        migrations.AddField(
            model_name='billingperiod',
            name='grant_used',
            field=models.DecimalField(decimal_places=4, default=Decimal('0'), help_text='The part of credits_used drawn from grants.', max_digits=18),
        ),
        migrations.AddField(
            model_name='creditevent',
            name='cost',
            field=models.DecimalField(db_default=Decimal('0'), decimal_places=10, default=Decimal('0'), help_text='Base x credit price + excess x excess price in effect then; unrounded.', max_digits=32),
        ),
        migrations.AddField(
            model_name='creditevent',
            name='grant_credits',
            field=models.DecimalField(db_default=Decimal('0'), decimal_places=4, default=Decimal('0'), help_text='The part of these credits drawn from grants (top-ups and bonuses).', max_digits=18),
        ),
        migrations.AddConstraint(
            model_name='billingperiod',
            constraint=models.CheckConstraint(condition=models.Q(('grant_used__gte', 0)), name='period_grant_used_not_negative'),
        ),
        migrations.AddConstraint(
            model_name='creditevent',
            constraint=models.CheckConstraint(condition=models.Q(('grant_credits__gte', 0)), name='creditevent_grant_not_negative'),
        ),
        migrations.AddField(
            model_name='creditgrant',
            name='created_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='creditgrant',
            name='subscription',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='grants', to='accounts.subscription'),
        ),
        migrations.AddField(
            model_name='grantadjustment',
            name='created_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='grantadjustment',
            name='grant',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='adjustments', to='credits.creditgrant'),
        ),
        migrations.AddField(
            model_name='grantadjustment',
            name='subscription',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='accounts.subscription'),
        ),
        migrations.AddField(
            model_name='planprice',
            name='created_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='subscriptionprice',
            name='created_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='subscriptionprice',
            name='subscription',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='prices', to='accounts.subscription'),
        ),
        migrations.AddIndex(
            model_name='creditgrant',
            index=models.Index(fields=['subscription', 'expires_at'], name='grant_subscription_exp_idx'),
        ),
        migrations.AddConstraint(
            model_name='creditgrant',
            constraint=models.CheckConstraint(condition=models.Q(('credits__gt', 0)), name='grant_credits_positive'),
        ),
        migrations.AddConstraint(
            model_name='creditgrant',
            constraint=models.CheckConstraint(condition=models.Q(('price__gte', 0)), name='grant_price_not_negative'),
        ),
        migrations.AddConstraint(
            model_name='creditgrant',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('kind', 'bonus'), _negated=True), ('price', 0), _connector='OR'), name='grant_bonus_is_free'),
        ),
        migrations.AddConstraint(
            model_name='creditgrant',
            constraint=models.CheckConstraint(condition=models.Q(('expires_at__isnull', True), ('expires_at__gt', models.F('effective_at')), _connector='OR'), name='grant_expires_after_effective'),
        ),
        migrations.AddConstraint(
            model_name='creditgrant',
            constraint=models.CheckConstraint(condition=models.Q(('credits_used__gte', 0), ('credits_lapsed__gte', 0), ('credits_used__lte', django.db.models.expressions.CombinedExpression(django.db.models.expressions.CombinedExpression(models.F('credits'), '+', models.F('credits_adjusted')), '-', models.F('credits_lapsed')))), name='grant_counters_within_credits'),
        ),
        migrations.AddConstraint(
            model_name='creditgrant',
            constraint=models.CheckConstraint(condition=models.Q(('reason', ''), _negated=True), name='grant_has_reason'),
        ),
        migrations.AddIndex(
            model_name='grantadjustment',
            index=models.Index(fields=['subscription', 'grant'], name='grant_adjustment_idx'),
        ),
        migrations.AddConstraint(
            model_name='grantadjustment',
            constraint=models.UniqueConstraint(condition=models.Q(('kind', 'lapse')), fields=('subscription', 'grant'), name='grant_lapses_once'),
        ),
        migrations.AddConstraint(
            model_name='grantadjustment',
            constraint=models.CheckConstraint(condition=models.Q(('credits', 0), _negated=True), name='grant_adjustment_not_zero'),
        ),
        migrations.AddConstraint(
            model_name='grantadjustment',
            constraint=models.CheckConstraint(condition=models.Q(('reason', ''), _negated=True), name='grant_adjustment_has_reason'),
        ),
        migrations.AddConstraint(
            model_name='planprice',
            constraint=models.UniqueConstraint(fields=('plan', 'effective_from'), name='plan_price_once'),
        ),
        migrations.AddConstraint(
            model_name='planprice',
            constraint=models.CheckConstraint(condition=models.Q(('credit_price__gte', 0), ('excess_price__gte', 0)), name='plan_prices_not_negative'),
        ),
        migrations.AddConstraint(
            model_name='subscriptionprice',
            constraint=models.UniqueConstraint(fields=('subscription', 'effective_from'), name='subscription_price_once'),
        ),
        migrations.AddConstraint(
            model_name='subscriptionprice',
            constraint=models.CheckConstraint(condition=models.Q(('credit_price__gte', 0), ('excess_price__gte', 0)), name='subscription_prices_not_negative'),
        ),
        migrations.RunSQL(FORWARD, BACKWARD, elidable=False),
    ]
