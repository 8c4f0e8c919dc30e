"""Logging filters wired in ``settings.LOGGING``."""

import logging

from django.core.exceptions import PermissionDenied
from django.http import Http404

# Refusals the application means: someone asked for what they may not see, or for nothing.
EXPECTED_REFUSALS = (PermissionDenied, Http404)


class ExpectedRefusalsWithoutTraceback(logging.Filter):
    """``django.request`` logs a 403 from ``PermissionDenied`` (every admin refusal) with the
    exception's traceback: thousands of lines for what is an answer, not a fault. Keep the one
    warning line (method, path, status) and drop the traceback; real errors keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EXPECTED_REFUSALS):
            record.exc_info = None
            record.exc_text = None
        return True
