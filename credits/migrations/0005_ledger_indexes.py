"""The ledger's foreign keys lose their own indexes: the ledger's composite indexes serve its
reads, and every index slows ingestion. The keys are otherwise unchanged."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def _unindexed(to, *, related_name='+', required=False, **options):
    """A ledger key without an index of its own; empty unless ``required``."""
    if not required:
        options.update(blank=True, null=True)
    return models.ForeignKey(
        db_index=False,
        on_delete=django.db.models.deletion.PROTECT,
        related_name=related_name,
        to=to,
        **options,
    )


LEDGER_KEYS = {
    'agent': _unindexed('credits.agent'),
    'api_key': _unindexed('accounts.apikey'),
    'created_by': _unindexed(settings.AUTH_USER_MODEL, help_text='Who entered an adjustment.'),
    'environment': _unindexed('accounts.environment'),
    'period': _unindexed('credits.billingperiod', related_name='events', required=True),
    'product': _unindexed('credits.product'),
    'subscription': _unindexed('accounts.subscription', required=True),
    'user': _unindexed(settings.AUTH_USER_MODEL),
}


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0002_subscription_admins_group'),
        ('credits', '0004_period_opened_notice'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        *(
            migrations.AlterField(model_name='creditevent', name=name, field=field)
            for name, field in LEDGER_KEYS.items()
        ),
        migrations.AlterField(
            model_name='idempotencyrecord',
            name='event',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='credits.creditevent'),
        ),
    ]
