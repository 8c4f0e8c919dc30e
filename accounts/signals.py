"""Signals that apps above ``accounts`` listen to.

``api_key_revoked``: sent by ``accounts.services.revoke_api_key`` once a key is revoked, in
its transaction, with ``api_key`` and ``now``; ``credits`` publishes it to webhooks.
"""

from django.dispatch import Signal

api_key_revoked = Signal()
