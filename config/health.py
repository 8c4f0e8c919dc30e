"""``GET /health/``: is this instance able to serve? Checks the database and the broker.

For load balancers and orchestrators: 200 when both answer, 503 (with what failed) otherwise.
It reveals nothing about tenants and needs no login.
"""

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.celery import app

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2


def _database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        logger.exception("event=health_check_failed component=database")
        return False


def _broker() -> bool:
    try:
        with app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
        return True
    except Exception:
        logger.exception("event=health_check_failed component=broker")
        return False


@never_cache
@require_GET
def health(request):
    checks = {"database": _database(), "broker": _broker()}
    healthy = all(checks.values())
    return JsonResponse(
        {
            "status": "ok" if healthy else "unavailable",
            **{name: "ok" if ok else "unavailable" for name, ok in checks.items()},
        },
        status=200 if healthy else 503,
    )
