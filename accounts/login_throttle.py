"""Brute-force protection of the login forms (the usage pages' and the admin's), by django-axes.

Failures are counted in the shared cache per account (the email, in any case) and per client
address; ``AXES_FAILURE_LIMIT`` failures of either lock that account or that address out for
``AXES_COOLOFF_TIME``, even with the right password, and then unlock by themselves. The token
endpoint passes no request to ``authenticate`` and keeps its own throttle (``accounts.api``).
"""

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.shortcuts import render
from rest_framework.settings import api_settings


class LoginFormBackend(AxesStandaloneBackend):
    """Refuses a locked-out account or address before the password is checked."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:  # not a login form: the API token's service authenticates itself
            return None
        return super().authenticate(request, username, password, **kwargs)


def authenticate_without_request(**credentials):
    """Django's model backend alone, for the token endpoint (throttled by DRF instead): inactive
    users are refused and an unknown email costs as much time as a wrong password."""
    return ModelBackend().authenticate(None, **credentials)


def login_username(request, credentials) -> str:
    """The account a login form names: its email, case and surrounding spaces ignored."""
    value = (credentials or {}).get("username")
    if value is None:
        value = request.POST.get("username", "") if request is not None else ""
    return str(value).strip().lower()


def client_address(request) -> str | None:
    """The client's address, read as the token throttle reads it: ``X-Forwarded-For`` is
    trusted only as far as ``NUM_PROXIES`` proxies append to it."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    proxies = api_settings.NUM_PROXIES or 0
    if proxies and forwarded:
        addresses = forwarded.split(",")
        return addresses[-min(proxies, len(addresses))].strip()
    return request.META.get("REMOTE_ADDR")


def locked_out(request, original_response=None, credentials=None):
    """The page a locked-out login gets: 429, saying for how long, with ``Retry-After``."""
    seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    response = render(
        request,
        "registration/locked_out.html",
        {"failure_limit": settings.AXES_FAILURE_LIMIT, "lockout_minutes": seconds // 60},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response
