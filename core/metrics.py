"""The application's Prometheus metrics, counted where things happen and served at ``/metrics``.

Defined once here (the kernel app) so that every app counts into the same families. With
``PROMETHEUS_MULTIPROC_DIR`` set before the first import of ``prometheus_client`` (gunicorn's
workers, the Celery workers and ``bin/demo`` set it), each process writes its counts to files
in that directory and ``/metrics`` sums them; without it (tests, one-off commands) they count
in the process. Counting is an in-memory add either way: no SQL, no I/O on the hot path.
"""

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter, Histogram

NAMESPACE = "creditdesk"

EVENTS_RECORDED = Counter(
    "events_recorded",
    "Usage events written to the ledger (idempotent replays are not counted again).",
    namespace=NAMESPACE,
)
EVENTS_REPLAYED = Counter(
    "events_replayed",
    "Usage events sent again with a known idempotency key and answered with the first event.",
    namespace=NAMESPACE,
)
EVENTS_REFUSED = Counter(
    "events_refused",
    "Usage events refused, by error code (the API's error.code).",
    ["code"],
    namespace=NAMESPACE,
)
RECORDING_SECONDS = Histogram(
    "recording_seconds",
    "Time the recording service took for one request (one event, or a batch).",
    ["request"],
    namespace=NAMESPACE,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CELERY_TASK_FAILURES = Counter(
    "celery_task_failures",
    "Celery tasks that raised (a task that will retry counts in celery_task_retries instead).",
    ["task"],
    namespace=NAMESPACE,
)
CELERY_TASK_RETRIES = Counter(
    "celery_task_retries",
    "Celery tasks that failed and were scheduled to run again.",
    ["task"],
    namespace=NAMESPACE,
)
EMAILS_SENT = Counter(
    "emails_sent",
    "Emails the mail server accepted (alerts, notices, reports, export links).",
    namespace=NAMESPACE,
)
EMAILS_FAILED = Counter(
    "emails_failed",
    "Emails the mail server refused or could not be reached for (the task retries them).",
    namespace=NAMESPACE,
)
ALERTS_SENT = Counter(
    "alerts_sent",
    "Threshold alerts and reset notices delivered, by channel.",
    ["channel"],
    namespace=NAMESPACE,
)
ALERTS_FAILED = Counter(
    "alerts_failed",
    "Threshold alerts and reset notices whose delivery failed, by channel (retried later).",
    ["channel"],
    namespace=NAMESPACE,
)

WEBHOOK_ATTEMPTS = Counter(
    "webhook_attempts",
    "Webhook and Slack posts, by endpoint kind and outcome (delivered: a 2xx; failed: retried).",
    ["kind", "outcome"],
    namespace=NAMESPACE,
)


def count_refusals(codes: Iterable[str]) -> None:
    """Add refused events by code: one increment per distinct code, however big the batch."""
    for code, count in Tally(codes).items():
        EVENTS_REFUSED.labels(code=code).inc(count)
