"""System checks of what accounts rely on in production."""

from django.conf import settings
from django.core.checks import Error, Tags, register

# Caches whose counts live in one process: every gunicorn worker would count on its own.
PER_PROCESS_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
}


@register(Tags.caches, Tags.security)
def shared_cache_in_production(app_configs, **kwargs):
    """Login lockouts and the token throttle count in the default cache: with DEBUG off it must
    be shared by all processes (Redis), or each worker allows the limit again."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if settings.DEBUG or backend not in PER_PROCESS_CACHES:
        return []
    return [
        Error(
            f"The default cache is per process ({backend}) while DEBUG is off: login lockouts "
            "and the token throttle would be counted separately by every worker.",
            hint="Set CACHE_URL to a shared cache, e.g. rediscache://127.0.0.1:6379/2.",
            id="accounts.E001",
        )
    ]
