"""The product as it runs in production: gunicorn serving ``config.wsgi``, DEBUG off."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import gunicorn_hooks

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# Requests each worker serves, per thread, before the bench measures it.
WARM_REQUESTS_PER_THREAD = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A gunicorn master with ``workers`` workers of production's class and threads
    (``config/gunicorn.py``, through ``bench/gunicorn_hooks.py``) on a free loopback port."""

    def __init__(self, *, workers: int, name: str):
        self.workers = workers
        self.port = free_port()
        self.log_path = RESULTS / f"gunicorn-{name}.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self._warm_dir = tempfile.TemporaryDirectory(prefix="bench-warm-")
        command = [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "config.wsgi",
            "--config",
            "python:bench.gunicorn_hooks",
            "--workers",
            str(self.workers),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--timeout",
            "600",
            "--backlog",
            "2048",
            "--log-level",
            "warning",
            "--error-logfile",
            str(self.log_path),
        ]
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "BENCH_WARM_DIR": self._warm_dir.name,
            "BENCH_WARM_REQUESTS": str(WARM_REQUESTS_PER_THREAD * gunicorn_hooks.threads),
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own gunicorn with fixed arguments
            command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
        )
        self._wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def warm_up(self, drive: Callable[[], object], *, timeout: float = 120.0) -> None:
        """Call ``drive`` (a short burst of requests from enough clients to use every thread)
        until every worker has served its warm-up requests."""
        deadline = time.monotonic() + timeout
        while True:
            drive()
            warm = {int(name) for name in os.listdir(self._warm_dir.name)}
            if set(self.worker_pids()) <= warm:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn workers not warm after {timeout:.0f} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._warm_dir.cleanup()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/api/v1/balance/")
                connection.getresponse().read()
                connection.close()
                if len(self.worker_pids()) >= self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer in 60 s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        if not self.process:
            return []
        master = self.process.pid
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == master:
                pids.append(int(entry.name))
        return sorted(pids)


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A ``/proc/PID/status`` memory field in KiB (VmRSS now, VmHWM the peak)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by these processes (those still alive)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def database_backend_pids(connection) -> list[int]:
    """The PostgreSQL backends serving the bench database (this machine's server)."""
    rows = connection.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    ).fetchall()
    return [row[0] for row in rows]


class CpuMeter:
    """CPU seconds spent by the application processes and by PostgreSQL during a block.

    PostgreSQL backends come and go (Django closes a connection older than CONN_MAX_AGE at the
    end of a request), so a sampler notes every backend's CPU twice a second and the last value
    seen counts; a backend's CPU before the block is subtracted when it was already there.
    """

    def __init__(self, application_pids):
        self.application_pids = application_pids

    def _sample(self, connection) -> None:
        for pid in database_backend_pids(connection):
            seconds = cpu_seconds([pid])
            self.seen[pid] = max(self.seen.get(pid, 0.0), seconds)
            self.before.setdefault(pid, seconds if self.first else 0.0)

    def __enter__(self) -> CpuMeter:
        import threading

        from . import database

        self.seen: dict[int, float] = {}
        self.before: dict[int, float] = {}
        self.first = True
        self.connection = database.connect(autocommit=True)
        self._sample(self.connection)
        self.first = False
        self.application = list(self.application_pids())
        self.application_start = cpu_seconds(self.application)
        self.stop = threading.Event()
        self.sampler = threading.Thread(target=self._run, daemon=True)
        self.sampler.start()
        return self

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self._sample(self.connection)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.sampler.join()
        self._sample(self.connection)
        self.connection.close()
        self.application_seconds = cpu_seconds(self.application) - self.application_start
        self.database_seconds = sum(self.seen[pid] - self.before[pid] for pid in self.seen)

    def per_event_ms(self, events: int) -> str:
        if not events:
            return "-"
        return (
            f"{1000 * self.application_seconds / events:.1f} + "
            f"{1000 * self.database_seconds / events:.1f}"
        )
