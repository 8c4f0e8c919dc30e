"""``GET /metrics``: Prometheus metrics, for the operator's scraper only.

Counters and the recording histogram are counted where things happen (``core.metrics``); with
``PROMETHEUS_MULTIPROC_DIR`` set, every process on the host (gunicorn workers, Celery workers)
writes its counts there and this view sums them, so a scrape sees the host, not the worker
that answered it. Gauges are read at scrape time: the Celery queues' lengths from the broker,
the alerts still owing their email, and how long ago each periodic task last ran. Recording
writes its rollups in its own transaction, so there is no rollup lag to measure.

Access: ``Authorization: Bearer <METRICS_TOKEN>``, or a client address in
``METRICS_ALLOWED_NETWORKS``; nothing else (401 or 403 in the API's error shape).
"""

import hmac
import ipaddress
import logging
import os

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_celery_beat.models import PeriodicTask
from kombu.exceptions import ChannelError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from accounts.login_throttle import client_address
from config.celery import app
from core.api_errors import error_body
from core.metrics import NAMESPACE
from credits.notifications import unsent_alerts

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2


@never_cache
@require_GET
def metrics(request):
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:  # one process (tests, runserver without the demo's setting): its own counts
        registry.register(REGISTRY)
    registry.register(ReadAtScrapeTime())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _refusal(request) -> JsonResponse | None:
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return None
    if _allowed_address(client_address(request)):
        return None
    if token:
        response = JsonResponse(
            error_body("not_authenticated", "Give the metrics token: Authorization: Bearer ..."),
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return JsonResponse(
        error_body(
            "permission_denied",
            "Metrics are served only to the networks in METRICS_ALLOWED_NETWORKS "
            "(or with METRICS_TOKEN).",
        ),
        status=403,
    )


def _allowed_address(address: str | None) -> bool:
    try:
        client = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(client in network for network in settings.METRICS_ALLOWED_NETWORKS)


class ReadAtScrapeTime:
    """The gauges that are facts of the whole system, read when Prometheus asks."""

    def collect(self):
        now = timezone.now()
        yield from self._queues()
        count, oldest = unsent_alerts(now=now)
        yield GaugeMetricFamily(
            f"{NAMESPACE}_alerts_unsent",
            "Threshold alerts and reset notices whose email is not sent yet (last 3 days).",
            value=count,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_alerts_oldest_unsent_age_seconds",
            "Seconds since the oldest unsent alert crossed its threshold (0 when none waits).",
            value=(now - oldest).total_seconds() if oldest else 0,
        )
        last_runs = GaugeMetricFamily(
            f"{NAMESPACE}_periodic_task_last_run_age_seconds",
            "Seconds since celery beat last ran each enabled periodic task.",
            labels=["task"],
        )
        for name, last_run_at in PeriodicTask.objects.filter(
            enabled=True, last_run_at__isnull=False
        ).values_list("task", "last_run_at"):
            last_runs.add_metric([name], (now - last_run_at).total_seconds())
        yield last_runs

    def _queues(self):
        reachable = GaugeMetricFamily(
            f"{NAMESPACE}_celery_broker_reachable",
            "1 when the Celery broker answered this scrape, else 0 (and no queue lengths).",
        )
        lengths = GaugeMetricFamily(
            f"{NAMESPACE}_celery_queue_length",
            "Messages waiting in each Celery queue (not yet taken by a worker).",
            labels=["queue"],
        )
        try:
            for queue, length in _queue_lengths():
                lengths.add_metric([queue], length)
        except Exception:
            logger.exception("event=metrics_broker_unreachable")
            reachable.add_metric([], 0)
            yield reachable
            return
        reachable.add_metric([], 1)
        yield reachable
        yield lengths


def _queue_lengths():
    """Each queue's length as the broker's transport counts it (Redis: the list's length over
    its priority lists; the demo's file broker: its message files)."""
    queues = {settings.CELERY_TASK_DEFAULT_QUEUE} | {
        route["queue"] for route in settings.CELERY_TASK_ROUTES.values()
    }
    with app.connection_for_read() as connection:
        connection.ensure_connection(
            max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_SECONDS
        )
        channel = connection.default_channel
        for queue in sorted(queues):
            try:
                yield queue, channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:  # Redis drops an empty list: the queue has no message
                yield queue, 0
