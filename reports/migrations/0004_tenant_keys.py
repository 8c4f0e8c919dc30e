"""Key every tenant table by its subscription in the database, for a distributed PostgreSQL.

Citus distributes the tenant tables by ``subscription_id`` and can only enforce a key that
includes it. So the primary keys become (subscription_id, id) (the ledger's (subscription_id,
id, timestamp): its partition key stays in it) and each foreign key between two tenant tables
becomes (subscription_id, x_id) -> (subscription_id, id). Django keeps ``id`` as the primary
key of every model (a ``ForeignKey`` cannot point at a composite key) and its single-column
foreign keys to tenant tables are ``db_constraint=False`` (dropped by the apps' previous
migrations), so the model state does not change here. The small tables keep an index on
``id`` for lookups by id alone (the admin, ``Model.save()``); the ledger, rollups, claims and
counters are only read through keys that start with the subscription.

Here, in the app at the top of the dependency chain, because a primary key can only be
replaced once every single-column foreign key pointing at it is gone, in all three apps. On a
big database, build the unique indexes ``CONCURRENTLY`` first and attach them with ``ADD
PRIMARY KEY USING INDEX``, and add the foreign keys ``NOT VALID`` then ``VALIDATE`` them.
"""

from django.db import migrations

LEDGER = "credits_creditevent"

# Tenant tables whose primary key is (id): True for those looked up by id alone too (the admin,
# API detail views, ``save()``), which keep a plain index on id; False for those read only through
# keys that start with the subscription.
TABLES = {
    "accounts_project": True,
    "accounts_environment": True,
    "accounts_membership": True,
    "accounts_team": True,
    "accounts_teammembership": True,
    "credits_agent": True,
    "credits_billingperiod": True,
    "credits_idempotencyrecord": False,
    "credits_dailyusage": False,
    "credits_personrollup": False,
    "credits_agentrollup": False,
    "credits_modelrollup": False,
    "credits_productrollup": False,
    "credits_subscriptionrollup": False,
    "credits_agentsessionday": False,
    "credits_creditlimit": True,
    "credits_userperiodusage": False,
    "credits_teamperiodusage": False,
    "credits_thresholdalert": True,
    "credits_product_enabled_for": False,
    "reports_reportschedule": True,
    "reports_delivery": True,
    "reports_unsubscribe": True,
}
BY_ID = tuple(table for table, by_id in TABLES.items() if by_id)

# (table, column, referenced table): the foreign keys between tenant tables.
FOREIGN_KEYS = (
    ("accounts_environment", "project_id", "accounts_project"),
    ("accounts_membership", "environment_id", "accounts_environment"),
    ("accounts_teammembership", "team_id", "accounts_team"),
    (LEDGER, "period_id", "credits_billingperiod"),
    (LEDGER, "environment_id", "accounts_environment"),
    (LEDGER, "agent_id", "credits_agent"),
    ("credits_dailyusage", "period_id", "credits_billingperiod"),
    ("credits_dailyusage", "environment_id", "accounts_environment"),
    ("credits_dailyusage", "agent_id", "credits_agent"),
    ("credits_personrollup", "environment_id", "accounts_environment"),
    ("credits_agentrollup", "agent_id", "credits_agent"),
    ("credits_subscriptionrollup", "agent_id", "credits_agent"),
    ("credits_agentsessionday", "agent_id", "credits_agent"),
    ("credits_creditlimit", "team_id", "accounts_team"),
    ("credits_userperiodusage", "period_id", "credits_billingperiod"),
    ("credits_teamperiodusage", "period_id", "credits_billingperiod"),
    ("credits_teamperiodusage", "team_id", "accounts_team"),
    ("credits_thresholdalert", "period_id", "credits_billingperiod"),
    ("reports_reportschedule", "environment_id", "accounts_environment"),
    ("reports_delivery", "schedule_id", "reports_reportschedule"),
    ("reports_unsubscribe", "schedule_id", "reports_reportschedule"),
)


def _primary_key(table: str, columns: str) -> list[str]:
    return [
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({columns})",
    ]


def _foreign_key_name(table: str, column: str) -> str:
    return f"{table.split('_', 1)[1][:30]}_{column}_tenant_fk"


FORWARD = [
    *(sql for table in TABLES for sql in _primary_key(table, "subscription_id, id")),
    *_primary_key(LEDGER, 'subscription_id, id, "timestamp"'),
    *(f"CREATE INDEX {table}_id_idx ON {table} (id)" for table in BY_ID),
    *(
        f"ALTER TABLE {table} ADD CONSTRAINT {_foreign_key_name(table, column)} "
        f"FOREIGN KEY (subscription_id, {column}) REFERENCES {target} (subscription_id, id) "
        "DEFERRABLE INITIALLY DEFERRED"
        for table, column, target in FOREIGN_KEYS
    ),
]

BACKWARD = [
    *(
        f"ALTER TABLE {table} DROP CONSTRAINT {_foreign_key_name(table, column)}"
        for table, column, _ in FOREIGN_KEYS
    ),
    *(f"DROP INDEX {table}_id_idx" for table in BY_ID),
    *_primary_key(LEDGER, 'id, "timestamp"'),
    *(sql for table in TABLES for sql in _primary_key(table, "id")),
]


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_distributable_keys"),
        ("credits", "0009_distributable_keys"),
        ("reports", "0003_distributable_keys"),
    ]

    operations = [migrations.RunSQL(FORWARD, BACKWARD, elidable=False)]
