"""System checks of the metrics endpoint's settings (``config/metrics.py``)."""

import os

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def metrics_access_in_production(app_configs, **kwargs):
    """With neither a token nor a network, ``/metrics`` refuses every scrape: say so before
    the operator finds out from an empty dashboard."""
    if settings.DEBUG or settings.METRICS_TOKEN or settings.METRICS_ALLOWED_NETWORKS:
        return []
    return [
        Warning(
            "Neither METRICS_TOKEN nor METRICS_ALLOWED_NETWORKS is set: /metrics refuses "
            "every request, so Prometheus cannot scrape this instance.",
            hint="Set METRICS_TOKEN (scrape with Authorization: Bearer ...) or "
            "METRICS_ALLOWED_NETWORKS (the scraper's network, e.g. 10.0.0.0/8).",
            id="core.W001",
        )
    ]


@register()
def metrics_directory_exists(app_configs, **kwargs):
    """prometheus_client writes each process's counts under PROMETHEUS_MULTIPROC_DIR and
    fails on the first count if the directory is missing: stop at start-up instead."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or os.path.isdir(directory):
        return []
    return [
        Error(
            f"PROMETHEUS_MULTIPROC_DIR names {directory}, which is not a directory.",
            hint="Create it (empty, e.g. on a tmpfs emptied at boot) or unset the variable.",
            id="core.E001",
        )
    ]
