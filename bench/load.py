"""Concurrent load: HTTP clients and raw-SQL workers, bounded in time and count.

The HTTP client is the standard library's ``http.client`` (one connection per thread): it
needs no extra dependency and costs the shared 2 cores little. gunicorn's sync workers close
the connection after each response and ``http.client`` reconnects, as a real client would.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .report import latency_summary


@dataclass
class LoadResult:
    seconds: float
    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # successful requests only
    units: int = 0  # events accepted (a batch request counts its accepted events)
    errors: list[str] = field(default_factory=list)

    def rate(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {
            "seconds": round(self.seconds, 2),
            "accepted": self.units,
            "per_second": round(self.rate(), 1),
            "statuses": dict(self.statuses),
            "latency": latency_summary(self.latencies),
            "errors": self.errors[:5],
        }


def run_threads(
    work: Callable[[int, Callable[[], bool]], tuple[int, float, int] | None],
    *,
    clients: int,
    duration: float,
    max_units: int | None = None,
) -> LoadResult:
    """Run ``work(thread_index, should_stop)`` in ``clients`` threads until ``duration`` or
    ``max_units``. Each call does one unit of work and returns ``(status, seconds, units)``,
    or None when the thread has nothing left to do.
    """
    result = LoadResult(seconds=0.0)
    lock = threading.Lock()
    stop = threading.Event()
    started = time.perf_counter()
    deadline = started + duration
    last_success = [started]

    def should_stop() -> bool:
        return stop.is_set() or time.perf_counter() > deadline

    def loop(index: int) -> None:
        while not should_stop():
            try:
                outcome = work(index, should_stop)
            except Exception as exc:
                with lock:
                    result.statuses["exception"] += 1
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)
                continue
            if outcome is None:
                return
            status, seconds, units = outcome
            with lock:
                result.statuses[status] += 1
                if units:
                    result.latencies.append(seconds)
                    result.units += units
                    last_success[0] = time.perf_counter()
                    if max_units is not None and result.units >= max_units:
                        stop.set()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    result.last_success_seconds = last_success[0] - started
    return result


class HttpClient:
    """One keep-alive-when-possible connection per thread."""

    def __init__(self, port: int, headers: dict[str, str] | None = None, timeout: float = 600):
        self.port = port
        self.headers = headers or {}
        self.timeout = timeout
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.local.connection = connection
        return connection

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, float]:
        connection = self._connection()
        started = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers={**self.headers, **(headers or {})})
            response = connection.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            connection.close()
            raise
        elapsed = time.perf_counter() - started
        if response.will_close:
            connection.close()
        return response.status, data, elapsed

    def stream(self, path: str, on_chunk: Callable[[bytes], None], chunk: int = 1 << 16) -> int:
        """GET ``path`` and hand each chunk of the body to ``on_chunk``; return the status."""
        connection = self._connection()
        connection.request("GET", path, headers=self.headers)
        response = connection.getresponse()
        while True:
            data = response.read(chunk)
            if not data:
                break
            on_chunk(data)
        connection.close()
        return response.status
