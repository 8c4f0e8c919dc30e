"""API key authentication: ``Authorization: Api-Key <secret>``.

A key acts for its subscription, not for a person, so the authenticated principal is a
``KeyPrincipal`` wrapping the key; views reach the key as ``request.auth``.
"""

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from .models import ApiKey

LAST_USED_PRECISION = timedelta(minutes=1)


class KeyPrincipal:
    """Stands in for ``request.user`` when a machine calls with an API key."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key

    def __str__(self) -> str:
        return f"API key {self.api_key.name}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Api-Key"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, secret = header.partition(" ")
        if scheme != self.keyword:
            return None
        secret = secret.strip()
        if not secret:
            raise exceptions.AuthenticationFailed("No API key given after 'Api-Key'.")
        prefix, _, _ = secret.partition(".")
        api_key = (
            ApiKey.objects.select_related("subscription", "environment")
            .filter(prefix=prefix, revoked=False)
            .first()
        )
        if api_key is None or not api_key.is_valid(secret):
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        self._touch(api_key)
        return KeyPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        return self.keyword

    @staticmethod
    def _touch(api_key: ApiKey) -> None:
        """Record last use, at most once a minute per key to keep writes off the hot path."""
        now = timezone.now()
        if api_key.last_used_at and now - api_key.last_used_at < LAST_USED_PRECISION:
            return
        ApiKey.objects.filter(subscription_id=api_key.subscription_id, pk=api_key.pk).update(
            last_used_at=now
        )
        api_key.last_used_at = now
