"""The benchmark's own database: created, migrated and loaded once, reused when it matches."""

from __future__ import annotations

import json
import os

import psycopg
from psycopg import sql

MARKER_TABLE = "bench_dataset"


def url() -> str:
    return os.environ["DATABASE_URL"]


def conninfo(database: str | None = None) -> str:
    """A libpq connection string for ``DATABASE_URL`` (or another database on that server)."""
    import environ

    config = environ.Env.db_url_config(url())
    parts = {
        "host": config.get("HOST") or config.get("OPTIONS", {}).get("host") or "127.0.0.1",
        "port": str(config.get("PORT") or 5432),
        "user": config.get("USER") or "postgres",
        "dbname": database or config["NAME"],
    }
    if config.get("PASSWORD"):
        parts["password"] = config["PASSWORD"]
    return " ".join(f"{key}={value}" for key, value in parts.items())


def name() -> str:
    import environ

    return environ.Env.db_url_config(url())["NAME"]


def connect(**kwargs) -> psycopg.Connection:
    return psycopg.connect(conninfo(), **kwargs)


def recreate() -> None:
    """Drop and create the bench database (never any other: its name must contain 'bench')."""
    database = name()
    if "bench" not in database:
        raise SystemExit(
            f"Refusing to recreate {database!r}: the bench database name must "
            "contain 'bench' (set BENCH_DATABASE_URL)."
        )
    with psycopg.connect(conninfo("postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def exists() -> bool:
    with psycopg.connect(conninfo("postgres"), autocommit=True) as admin:
        return (
            admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name()]).fetchone()
            is not None
        )


def dataset() -> dict | None:
    """What the generator loaded into this database, or None."""
    if not exists():
        return None
    with connect() as connection:
        present = connection.execute("SELECT to_regclass(%s)", [MARKER_TABLE]).fetchone()[0]
        if not present:
            return None
        row = connection.execute(f"SELECT facts FROM {MARKER_TABLE}").fetchone()
        return json.loads(row[0]) if row else None


def remember(facts: dict) -> None:
    with connect() as connection:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (facts text NOT NULL)")
        connection.execute(f"DELETE FROM {MARKER_TABLE}")
        connection.execute(f"INSERT INTO {MARKER_TABLE} VALUES (%s)", [json.dumps(facts)])


def postgresql_version() -> str:
    with connect() as connection:
        version = connection.execute("SHOW server_version").fetchone()[0]
        settings = dict(
            connection.execute(
                "SELECT name, setting || COALESCE(unit, '') FROM pg_settings WHERE name IN "
                "('shared_buffers', 'synchronous_commit', 'max_connections')"
            ).fetchall()
        )
    shared = settings.get("shared_buffers", "")
    if shared.endswith("8kB"):
        shared = f"{int(shared[:-3]) * 8 // 1024} MB"
    return (
        f"PostgreSQL {version.split()[0]} (shared_buffers {shared}, synchronous_commit "
        f"{settings.get('synchronous_commit')})"
    )
