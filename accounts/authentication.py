"""API key authentication: ``Authorization: Api-Key <secret>``.

A key acts for its subscription, not for a person, so the authenticated principal is a
``KeyPrincipal`` wrapping the key; views reach the key as ``request.auth``.

A key is verified (found by prefix, its secret hashed and compared) once per process: the
verified row, with its subscription and environment, is kept by secret, and each request
only reads the rows' versions (``xmin`` and ``ctid``, which change on every update) by
the key's prefix. A revocation, an expiry date, a deletion or any edit of the key, its
subscription or its environment changes them, so the very next request verifies afresh.
"""

import copy
import threading
from datetime import timedelta

from django.db import connection
from django.db.models.expressions import RawSQL
from django.utils import timezone
from rest_framework import authentication, exceptions

from .models import ApiKey, Environment, Subscription

LAST_USED_PRECISION = timedelta(minutes=1)
# Keys kept per process, at most (only keys whose secret was verified are kept).
VERIFIED_KEYS_KEPT = 1_000

_KEY, _SUBSCRIPTION, _ENVIRONMENT = (
    f'"{model._meta.db_table}"' for model in (ApiKey, Subscription, Environment)
)
# The versions of a key's rows; the ORM names its joined tables after themselves.
_VERSIONS = ", ".join(
    f"{table}.{column}::text"
    for table in (_KEY, _SUBSCRIPTION, _ENVIRONMENT)
    for column in ("xmin", "ctid")
)
_VERSIONS_OF_PREFIX = (
    f"SELECT ARRAY[{_VERSIONS}] FROM {_KEY} "  # noqa: S608 - constant table names
    f'INNER JOIN {_SUBSCRIPTION} ON ({_KEY}."subscription_id" = {_SUBSCRIPTION}."id") '
    f'LEFT OUTER JOIN {_ENVIRONMENT} ON ({_KEY}."environment_id" = {_ENVIRONMENT}."id") '
    f'WHERE {_KEY}."prefix" = %s'
)
# Last use, written only to the key row as it was verified; it returns the row's new version.
_TOUCH = (
    f'UPDATE {_KEY} SET "last_used_at" = %s '  # noqa: S608 - constant table name
    'WHERE "subscription_id" = %s AND "id" = %s AND xmin::text = %s AND ctid::text = %s '
    "RETURNING xmin::text, ctid::text"
)


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
        api_key = VERIFIED_KEYS.get(secret)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        self._touch(secret, api_key)
        return KeyPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        return self.keyword

    @staticmethod
    def _touch(secret: str, api_key: ApiKey) -> None:
        """Record last use, at most once a minute per key to keep writes off the hot path."""
        now = timezone.now()
        if api_key.last_used_at and now - api_key.last_used_at < LAST_USED_PRECISION:
            return
        VERIFIED_KEYS.touch(secret, api_key, now)


class VerifiedKeys:
    """This process's verified keys by secret, each with the versions of its rows."""

    def __init__(self):
        self._keys: dict[str, ApiKey] = {}
        self._lock = threading.Lock()

    def get(self, secret: str) -> ApiKey | None:
        """The key ``secret`` opens, not revoked, as a copy of its own for this request."""
        prefix, _, _ = secret.partition(".")
        kept = self._keys.get(secret)
        if kept is not None and kept.versions == self._versions(prefix):
            return _own_copy(kept)
        api_key = self._verify(prefix, secret)
        with self._lock:
            if api_key is None:
                self._keys.pop(secret, None)
                return None
            if len(self._keys) >= VERIFIED_KEYS_KEPT:
                self._keys.clear()
            self._keys[secret] = api_key
        return _own_copy(api_key)

    def touch(self, secret: str, api_key: ApiKey, now) -> None:
        """Write the key's last use, and keep the key at the version that write made, so that
        the next request does not verify it again. A row changed since it was verified is not
        written: the next request verifies it afresh, and records its use then."""
        with connection.cursor() as cursor:
            cursor.execute(
                _TOUCH, [now, api_key.subscription_id, api_key.pk, *api_key.versions[:2]]
            )
            row = cursor.fetchone()
        if row is None:
            return
        api_key.last_used_at = now
        kept = _own_copy(api_key)
        kept.versions = [*row, *api_key.versions[2:]]
        with self._lock:
            if secret in self._keys:
                self._keys[secret] = kept

    @staticmethod
    def _verify(prefix: str, secret: str) -> ApiKey | None:
        """The key row with its rows' ``versions``, read in one statement, if ``secret`` opens
        it."""
        api_key = (
            ApiKey.objects.select_related("subscription", "environment")
            .filter(prefix=prefix, revoked=False)
            .annotate(versions=RawSQL(f"ARRAY[{_VERSIONS}]", ()))  # noqa: S611 - constant
            .first()
        )
        if api_key is None or not api_key.is_valid(secret):
            return None
        return api_key

    @staticmethod
    def _versions(prefix: str) -> list[str] | None:
        with connection.cursor() as cursor:
            cursor.execute(_VERSIONS_OF_PREFIX, [prefix])
            row = cursor.fetchone()
        return row[0] if row else None


def _own_copy(api_key: ApiKey) -> ApiKey:
    """A copy whose subscription and environment are copies too: requests in other threads
    use the kept key, and code may set attributes on what it is given."""
    own = copy.copy(api_key)  # a model's copy has its own state and cache of relations
    for name, related in own._state.fields_cache.items():
        own._state.fields_cache[name] = copy.copy(related) if related is not None else None
    return own


VERIFIED_KEYS = VerifiedKeys()
