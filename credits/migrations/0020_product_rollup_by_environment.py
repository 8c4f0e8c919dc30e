"""``ProductRollup`` keyed by environment too: usage by environment (or project) and product
(or feature) per local month reads its monthly rows instead of a year of ``DailyUsage``.

The rows already there are derived again, split by environment, from ``DailyUsage`` (which
holds every dimension per local day and equals the ledger, archived months included): the
day rows summed from it, the month rows from the day rows, then the new unique index built.
Backwards, the rows of each (day or month, product, feature) are added up into one again."""

import django.db.models.deletion
import django.db.models.functions.comparison
from django.db import migrations, models

# The foreign keys are checked as each statement ends, not at the commit: PostgreSQL builds an
# index or alters a table only with no checks pending.
IMMEDIATE = "SET CONSTRAINTS ALL IMMEDIATE"
# Frozen SQL: ``ProductRollup``'s rows summed from the daily rollup, keyed as
# ``credits.rollups`` keys them now.
FORWARD = [
    IMMEDIATE,
    "DELETE FROM credits_productrollup",
    """INSERT INTO credits_productrollup (subscription_id, grain, day, product_id, feature, environment_id, credits, excess_credits, grant_credits, cost, runs, failed_runs, input_tokens, output_tokens, latency_ms_total, latency_samples)
    SELECT subscription_id, 'day', day, product_id, feature, environment_id, SUM(credits), SUM(excess_credits), SUM(grant_credits), SUM(cost), SUM(runs), SUM(failed_runs), SUM(input_tokens), SUM(output_tokens), SUM(latency_ms_total), SUM(latency_samples)
    FROM credits_dailyusage
    GROUP BY subscription_id, day, product_id, feature, environment_id""",
    """INSERT INTO credits_productrollup (subscription_id, grain, day, product_id, feature, environment_id, credits, excess_credits, grant_credits, cost, runs, failed_runs, input_tokens, output_tokens, latency_ms_total, latency_samples)
    SELECT subscription_id, 'month', date_trunc('month', day)::date, product_id, feature, environment_id, SUM(credits), SUM(excess_credits), SUM(grant_credits), SUM(cost), SUM(runs), SUM(failed_runs), SUM(input_tokens), SUM(output_tokens), SUM(latency_ms_total), SUM(latency_samples)
    FROM credits_productrollup
    WHERE grain = 'day'
    GROUP BY subscription_id, date_trunc('month', day)::date, product_id, feature, environment_id""",
]
BACKWARD = [
    IMMEDIATE,
    """WITH removed AS (DELETE FROM credits_productrollup RETURNING *)
    INSERT INTO credits_productrollup (subscription_id, grain, day, product_id, feature, credits, excess_credits, grant_credits, cost, runs, failed_runs, input_tokens, output_tokens, latency_ms_total, latency_samples)
    SELECT subscription_id, grain, day, product_id, feature, SUM(credits), SUM(excess_credits), SUM(grant_credits), SUM(cost), SUM(runs), SUM(failed_runs), SUM(input_tokens), SUM(output_tokens), SUM(latency_ms_total), SUM(latency_samples)
    FROM removed
    GROUP BY subscription_id, grain, day, product_id, feature""",
]

class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0006_api_key_credit_budget"),
        ("credits", "0019_period_grant_used_db_default"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="productrollup",
            name="product_rollup_unique",
        ),
        migrations.AddField(
            model_name="productrollup",
            name="environment",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="accounts.environment",
            ),
        ),
        migrations.RunSQL(FORWARD, BACKWARD, elidable=False),
        migrations.AddConstraint(
            model_name="productrollup",
            constraint=models.UniqueConstraint(
                models.F("subscription_id"),
                models.F("grain"),
                models.F("day"),
                django.db.models.functions.comparison.Coalesce("product_id", models.Value(0)),
                models.F("feature"),
                django.db.models.functions.comparison.Coalesce(
                    "environment_id", models.Value(0)
                ),
                name="product_rollup_unique",
            ),
        ),
    ]
