"""gunicorn hooks of the bench's server (``-c``): each worker notes, by a file named after its
pid in ``BENCH_WARM_DIR``, that it has served ``BENCH_WARM_REQUESTS`` requests, so that the
bench measures warm workers only (imports done, a database connection per thread, API keys
verified)."""

import os
import runpy
import threading
from pathlib import Path

# Production's worker model, read from its file (importing the ``config`` package would load
# Celery into gunicorn's master).
_production = runpy.run_path(str(Path(__file__).resolve().parent.parent / "config" / "gunicorn.py"))
worker_class = _production["worker_class"]
threads = _production["threads"]

_served = 0  # in each worker: the config is read before the workers fork
_lock = threading.Lock()


def post_request(worker, req, environ, resp) -> None:
    global _served
    with _lock:
        _served += 1
        served = _served
    if served == int(os.environ["BENCH_WARM_REQUESTS"]):
        (Path(os.environ["BENCH_WARM_DIR"]) / str(os.getpid())).touch()
