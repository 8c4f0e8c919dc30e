"""Code that reads for reports says so here; ``config.db_routers`` sends those reads to the
read replica when one is configured (``REPLICA_DATABASE_URL``), and changes nothing otherwise."""

from contextlib import contextmanager
from contextvars import ContextVar

_for_reports = ContextVar("reading_for_reports", default=False)


@contextmanager
def reading_for_reports():
    token = _for_reports.set(True)
    try:
        yield
    finally:
        _for_reports.reset(token)


def is_reading_for_reports() -> bool:
    return _for_reports.get()
