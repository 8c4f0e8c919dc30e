"""The email backend every email goes through: the one ``EMAIL_URL`` names, counted.

One place sees every message (alerts, notices, scheduled reports, export links, and whatever
sends email later), so ``creditdesk_emails_sent_total`` and ``creditdesk_emails_failed_total``
cannot miss a sender.
"""

from django.conf import settings
from django.core.mail import get_connection
from django.core.mail.backends.base import BaseEmailBackend

from core.metrics import EMAILS_FAILED, EMAILS_SENT


class CountingEmailBackend(BaseEmailBackend):
    """Hands messages to ``EMAIL_DELIVERY_BACKEND`` and counts what it accepted or refused."""

    def __init__(self, fail_silently=False, **kwargs):
        super().__init__(fail_silently=fail_silently)
        self.delivery = get_connection(
            settings.EMAIL_DELIVERY_BACKEND, fail_silently=fail_silently, **kwargs
        )

    def open(self):
        return self.delivery.open()

    def close(self):
        self.delivery.close()

    def send_messages(self, email_messages):
        messages = list(email_messages)
        try:
            sent = self.delivery.send_messages(messages) or 0
        except Exception:
            # SMTP stops at the first refusal: the batch is retried whole, so counted whole.
            EMAILS_FAILED.inc(len(messages))
            raise
        EMAILS_SENT.inc(sent)
        return sent
