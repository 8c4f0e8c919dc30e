"""The Celery application: configuration comes from Django settings (``CELERY_*``)."""

import os

from celery import Celery
from celery.signals import task_failure, task_retry

from core.metrics import CELERY_TASK_FAILURES, CELERY_TASK_RETRIES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("creditdesk")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_failure.connect
def count_failure(sender=None, **kwargs):
    """A task that raised and will not run again (its retries, if any, are spent)."""
    CELERY_TASK_FAILURES.labels(task=sender.name).inc()


@task_retry.connect
def count_retry(sender=None, **kwargs):
    """A task that failed and was scheduled to run again (e.g. an email, after an SMTP error)."""
    CELERY_TASK_RETRIES.labels(task=sender.name).inc()
