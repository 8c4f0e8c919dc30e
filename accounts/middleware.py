"""Admin pages show times in the subscription's time zone, named (``5 Dec 2026, 15:45 CET``).

Django's admin writes datetimes in the current time zone with ``DATETIME_FORMAT`` (which names
the zone, ``config/formats``). For someone who administers subscriptions in one time zone that
zone is activated; for platform staff and people across several zones, the configured
``TIME_ZONE``. Lists where rows belong to different subscriptions (the ledger) also write each
row in its own subscription's zone (``core.display.format_moment``).
"""

from django.conf import settings
from django.utils import timezone

from .admin_scoping import administered_zones


class AdminTimeZoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.admin_prefix = "/admin/"

    def __call__(self, request):
        user = getattr(request, "user", None)
        if (
            request.path.startswith(self.admin_prefix)
            and user is not None
            and user.is_authenticated
            and not user.is_superuser
        ):
            zones = set(administered_zones(request))
            zone = zones.pop() if len(zones) == 1 else settings.TIME_ZONE
            with timezone.override(zone):
                return self.get_response(request)
        return self.get_response(request)
