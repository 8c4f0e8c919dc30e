"""The schema is distributable: the catalog after migrations is what Citus needs.

Citus distributes each tenant table by ``subscription_id`` and co-locates them, so that one
subscription's rows live on one node. It can only do that when the database itself is keyed
by the tenant: every tenant table has the column, every primary key and unique constraint or
unique index includes it (a node can only enforce uniqueness among its own rows), and every
foreign key between two tenant tables includes it on both sides (composite
``(subscription_id, x_id) -> (subscription_id, id)``), so that each is checked on one node.
Reference tables (copied to every node) may be referenced from anywhere but may not reference
a distributed table themselves.

Each finding names a table and what lacks the subscription: its ``subscription_id`` column, its
primary key (``pk``), a unique constraint or index, or a foreign key (``fk``).

This test reads PostgreSQL's catalog (``pg_constraint``, ``pg_index``, ``pg_attribute``,
``pg_partitioned_table``) of the migrated test database, for every table of the project's apps,
and lists what breaks those rules. ``PENDING`` is what is known and not fixed yet: the test
fails when something new appears and when something pending gets fixed (then remove it).
"""

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, transaction

from accounts.models import Environment
from tests.factories import EnvironmentFactory, ProjectFactory, SubscriptionFactory, TeamFactory

pytestmark = pytest.mark.django_db

PROJECT_APPS = ("accounts", "credits", "reports")
TENANT_COLUMN = "subscription_id"

# Distributed by its own id, co-located with every tenant table: a tenant row's
# ``subscription_id`` is this table's distribution column.
SUBSCRIPTIONS = "accounts_subscription"

# Reference tables: small, read everywhere, written rarely; Citus keeps a copy on every node.
REFERENCE_TABLES = {
    # People belong to several subscriptions (and log in before one is chosen).
    "accounts_user",
    "accounts_user_groups",
    "accounts_user_user_permissions",
    # The product catalogue (plans are a column of the subscription).
    "credits_product",
    # The plans' price list, set by platform staff and read for every subscription.
    "credits_planprice",
    # API keys: authentication finds a key by its prefix before it knows the subscription,
    # so the prefix stays unique across all subscriptions. A reference table keeps that
    # unique constraint and lets the ledger and rollups reference a key from every node. Its
    # only frequent write is ``last_used_at``, at most once a minute per key.
    "accounts_apikey",
}

# What the catalog check finds and is not fixed yet (see the README, "Scaling out"): the
# audit trail's platform-wide events (product catalogue changes) have no subscription; they
# are to move to a table of their own.
PENDING = {
    "accounts_auditevent: pk (id)",
    "accounts_auditevent: subscription_id nullable",
}


def _rows(sql: str, params=()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def project_tables() -> set[str]:
    return {
        model._meta.db_table
        for label in PROJECT_APPS
        for model in apps.get_app_config(label).get_models(include_auto_created=True)
        if model._meta.managed and not model._meta.proxy
    }


def tenant_tables() -> set[str]:
    return project_tables() - REFERENCE_TABLES - {SUBSCRIPTIONS}


def _columns(table: str) -> dict[str, bool]:
    """Column name -> NOT NULL."""
    return {
        name: not_null
        for name, not_null in _rows(
            "SELECT attname, attnotnull FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [table],
        )
    }


def _constraints(table: str) -> list[tuple]:
    """(name, type, own columns, referenced table, referenced columns) of ``table``."""
    return _rows(
        """
        SELECT c.conname, c.contype,
               ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(num, pos)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num
                     ORDER BY k.pos),
               c.confrelid::regclass::text,
               ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(num, pos)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num
                     ORDER BY k.pos)
        FROM pg_constraint c
        WHERE c.conrelid = %s::regclass AND c.contype IN ('p', 'u', 'f') AND c.conparentid = 0
        ORDER BY c.conname
        """,
        [table],
    )


def _unique_indexes(table: str) -> list[tuple[str, list[str]]]:
    """(name, plain key columns) of each unique index; expressions are not columns."""
    return _rows(
        """
        SELECT i.indexrelid::regclass::text,
               ARRAY(SELECT a.attname FROM unnest(i.indkey) k(num)
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num)
        FROM pg_index i WHERE i.indrelid = %s::regclass AND i.indisunique
        ORDER BY 1
        """,
        [table],
    )


def _partition_key(table: str) -> list[str] | None:
    rows = _rows(
        """
        SELECT ARRAY(SELECT a.attname FROM unnest(p.partattrs) k(num)
                     JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.num)
        FROM pg_partitioned_table p WHERE p.partrelid = %s::regclass
        """,
        [table],
    )
    return rows[0][0] if rows else None


def _partitions(table: str) -> list[str]:
    return [
        name
        for (name,) in _rows(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass",
            [table],
        )
    ]


def _tenant_table_findings(table: str, tenants: set[str]) -> set[str]:
    found = set()
    columns = _columns(table)
    if TENANT_COLUMN not in columns:
        found.add(f"{table}: no {TENANT_COLUMN}")
    elif not columns[TENANT_COLUMN]:
        found.add(f"{table}: {TENANT_COLUMN} nullable")
    partition_key = _partition_key(table)
    constraints = _constraints(table)
    if not any(kind == "p" for _, kind, *_ in constraints):
        found.add(f"{table}: no primary key")
    for name, kind, own, target, target_columns in constraints:
        key = f"({', '.join(own)})"
        label = "pk" if kind == "p" else f"unique {name}"
        if kind in ("p", "u"):
            if TENANT_COLUMN not in own:
                found.add(f"{table}: {label} {key}")
            if partition_key and not set(partition_key) <= set(own):
                found.add(f"{table}: {label} {key} without the partition key")
        elif target in tenants:
            if (TENANT_COLUMN, TENANT_COLUMN) not in zip(own, target_columns, strict=True):
                found.add(f"{table}: fk {key} -> {target}")
        elif target == SUBSCRIPTIONS and own != [TENANT_COLUMN]:
            found.add(f"{table}: fk {key} -> {target}, not its tenant")
        elif target not in tenants | REFERENCE_TABLES | {SUBSCRIPTIONS}:
            found.add(f"{table}: fk {key} -> {target}, not distributed")
    constrained = {name for name, kind, *_ in constraints if kind in ("p", "u")}
    for name, own in _unique_indexes(table):
        if name not in constrained and TENANT_COLUMN not in own:
            found.add(f"{table}: unique index {name}")
    for partition in _partitions(table):
        keys = [own for _, kind, own, *_ in _constraints(partition) if kind == "p"]
        inherited = _rows(
            "SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p' "
            "AND conparentid <> 0",
            [partition],
        )
        if keys or not inherited:
            found.add(f"{partition}: its primary key is not the partitioned table's")
    return found


def schema_findings() -> set[str]:
    tenants = tenant_tables()
    found = set()
    for table in sorted(tenants):
        found |= _tenant_table_findings(table, tenants)
    for table in sorted(REFERENCE_TABLES | {SUBSCRIPTIONS}):
        for _name, kind, own, target, _ in _constraints(table):
            if kind == "f" and target in tenants | {SUBSCRIPTIONS}:
                found.add(f"{table}: fk ({', '.join(own)}) -> {target}, from a reference table")
    return found


def test_every_tenant_table_is_keyed_by_the_subscription():
    assert sorted(schema_findings() - PENDING) == [], "new findings"
    assert sorted(PENDING - schema_findings()) == [], "fixed: remove them from PENDING"


def test_every_project_table_is_classified():
    """A new table is a tenant table unless it is named a reference table here."""
    assert project_tables() >= REFERENCE_TABLES
    assert SUBSCRIPTIONS in project_tables()
    assert "credits_creditevent" in tenant_tables()


def test_the_ledger_stays_partitioned_by_month_with_the_tenant_in_its_key():
    """Citus distributes partitioned tables: the partition key and the tenant are both in the
    primary key, and every month's partition inherits it."""
    ledger = "credits_creditevent"
    assert _partition_key(ledger) == ["timestamp"]
    (primary_key,) = [own for _, kind, own, *_ in _constraints(ledger) if kind == "p"]
    assert primary_key == [TENANT_COLUMN, "id", "timestamp"]
    assert len(_partitions(ledger)) > 3


def test_an_api_key_prefix_is_unique_across_subscriptions():
    """Keys are found by prefix before the subscription is known: the reference table keeps
    the prefix unique over all subscriptions."""
    unique = [own for _, kind, own, *_ in _constraints("accounts_apikey") if kind == "u"]
    unique += [own for _, own in _unique_indexes("accounts_apikey")]
    assert ["prefix"] in unique


def test_the_check_sees_what_citus_would_refuse():
    """The check itself, on scratch tables: each key without the tenant is found."""
    tenants = tenant_tables() | {"scratch_agent", "scratch_tenant"}
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE scratch_agent (id bigint PRIMARY KEY)")
        cursor.execute(
            "CREATE TEMPORARY TABLE scratch_tenant (id bigint PRIMARY KEY, "
            "subscription_id bigint, agent_id bigint REFERENCES scratch_agent (id), "
            "name text UNIQUE)"
        )
    found = _tenant_table_findings("scratch_tenant", tenants)
    assert found >= {
        "scratch_tenant: subscription_id nullable",
        "scratch_tenant: pk (id)",
        "scratch_tenant: unique scratch_tenant_name_key (name)",
        "scratch_tenant: fk (agent_id) -> scratch_agent",
    }


def test_a_row_cannot_point_at_another_subscriptions_row():
    """The composite keys hold what the single-column ones did, and more: a team limit of one
    subscription cannot name another subscription's team."""
    team = TeamFactory()
    other = SubscriptionFactory()
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            "INSERT INTO credits_creditlimit (subscription_id, team_id, credits, updated_at) "
            "VALUES (%s, %s, 10, now())",
            [other.pk, team.pk],
        )


def test_an_environment_takes_its_projects_subscription():
    project = ProjectFactory()

    environment = EnvironmentFactory(project=project)

    assert Environment.objects.get(pk=environment.pk).subscription_id == project.subscription_id
