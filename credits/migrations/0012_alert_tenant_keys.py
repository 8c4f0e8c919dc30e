"""The alert and webhook tables keyed by their subscription, as reports' 0004_tenant_keys keys
every tenant table: primary keys (subscription_id, id), with a plain index on id for lookups by
id alone, and foreign keys between tenant tables (subscription_id, x_id) -> (subscription_id,
id), so that a distributed PostgreSQL (Citus) checks each on one node."""

from django.db import migrations

TABLES = (
    "credits_webhookendpoint",
    "credits_webhookdelivery",
    "credits_alertrule",
    "credits_alertfiring",
)

# (table, column, referenced table, constraint name)
FOREIGN_KEYS = (
    ("credits_webhookdelivery", "endpoint_id", "credits_webhookendpoint", "webhookdelivery_endpoint_id_tenant_fk"),
    ("credits_alertrule", "team_id", "accounts_team", "alertrule_team_id_tenant_fk"),
    ("credits_alertrule", "webhook_id", "credits_webhookendpoint", "alertrule_webhook_id_tenant_fk"),
    ("credits_alertrule", "slack_id", "credits_webhookendpoint", "alertrule_slack_id_tenant_fk"),
    ("credits_alertfiring", "rule_id", "credits_alertrule", "alertfiring_rule_id_tenant_fk"),
    ("credits_alertfiring", "period_id", "credits_billingperiod", "alertfiring_period_id_tenant_fk"),
)


def _primary_key(table: str, columns: str) -> list[str]:
    return [
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({columns})",
    ]


FORWARD = [
    *(sql for table in TABLES for sql in _primary_key(table, "subscription_id, id")),
    *(f"CREATE INDEX {table}_id_idx ON {table} (id)" for table in TABLES),
    *(
        f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY (subscription_id, {column}) "
        f"REFERENCES {target} (subscription_id, id) DEFERRABLE INITIALLY DEFERRED"
        for table, column, target, name in FOREIGN_KEYS
    ),
]

BACKWARD = [
    *(f"ALTER TABLE {table} DROP CONSTRAINT {name}" for table, _, _, name in FOREIGN_KEYS),
    *(f"DROP INDEX {table}_id_idx" for table in TABLES),
    *(sql for table in TABLES for sql in _primary_key(table, "id")),
]


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0011_subscription_admins_alerts_and_webhooks"),
        ("reports", "0004_tenant_keys"),
    ]

    operations = [migrations.RunSQL(FORWARD, BACKWARD, elidable=False)]
