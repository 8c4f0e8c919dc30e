"""The ``DATABASE_URL`` of the test database, for the processes a test starts."""

from django.db import connection


def child_database_url() -> str:
    """Host and port as parameters: the host may be a socket directory (embedded PostgreSQL)."""
    params = connection.get_connection_params()
    host, port = params.get("host") or "127.0.0.1", params.get("port") or 5432
    return f"postgres://{params['user']}@/{params['dbname']}?host={host}&port={port}"
