"""Large credit usage exports: written to storage by a worker, delivered as a signed link.

A CSV export with more than ``LARGE_EXPORT_ROWS`` rows is not streamed to the caller, whose
HTTP client or proxy may give up first; the API answers 202 and a worker on the ``reports``
queue writes the file through Django's storage API (the file system by default; an object
store if one is configured) and emails the caller a signed link that expires after
``LARGE_EXPORT_LINK_DAYS``. The file is the same CSV the endpoint streams, as of the moment
it was asked for.
"""

import logging
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core import signing
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.mail import send_mail
from django.urls import reverse

from accounts.models import User

from . import selectors
from .exports import credit_usage_table, csv_chunks, csv_filename

logger = logging.getLogger(__name__)

FOLDER = "exports"
SALT = "creditdesk.large-export"


@dataclass(frozen=True)
class ExportRequest:
    """What the caller asked for, enough for a worker to build the same export again."""

    user_id: int
    scope: str
    subscription_id: int | None
    environment_id: str | None
    as_of: str  # ISO 8601: the billing period is the one current when it was asked for
    export_id: str

    def as_task_arguments(self) -> dict:
        return self.__dict__.copy()


def write_and_deliver(request: ExportRequest) -> str:
    """Write the export to storage and email its link; return the file's path.

    Safe to run twice (a retry after an SMTP error, a redelivered task): the export id names
    the file, which is written once; the link is emailed at least once.
    """
    user = User.objects.get(pk=request.user_id)
    export = selectors.credit_usage_export(
        user=user,
        scope=request.scope,
        subscription_id=request.subscription_id,
        environment_id=uuid.UUID(request.environment_id) if request.environment_id else None,
        now=datetime.fromisoformat(request.as_of),
    )
    filename = csv_filename(
        subscription=export.subscription,
        report=f"credit-usage-{export.scope}",
        timeframe_label=export.timeframe.label,
    )
    path = f"{FOLDER}/{request.export_id}/{filename}"
    if not default_storage.exists(path):
        with tempfile.TemporaryFile() as target:
            for chunk in csv_chunks(credit_usage_table(export)):
                target.write(chunk)
            target.seek(0)
            path = default_storage.save(path, File(target))
    link = settings.SITE_URL.rstrip("/") + reverse(
        "large-export-download", args=[signing.dumps(path, salt=SALT)]
    )
    days = settings.LARGE_EXPORT_LINK_DAYS
    send_mail(
        subject=f"Your Creditdesk export is ready: {filename}",
        message=(
            f"Your credit usage export ({export.scope}, {export.timeframe.label}) is ready.\n\n"
            f"Download it within {days} days:\n{link}\n"
        ),
        from_email=None,
        recipient_list=[user.email],
    )
    logger.info("event=large_export_written export_id=%s path=%s", request.export_id, path)
    return path


def path_from_token(token: str) -> str | None:
    """The stored file a download link points to, or None if it is forged or expired."""
    try:
        return signing.loads(
            token, salt=SALT, max_age=timedelta(days=settings.LARGE_EXPORT_LINK_DAYS)
        )
    except signing.BadSignature:  # SignatureExpired is one too
        return None
