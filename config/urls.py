from csp.decorators import csp_update
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from config.health import health
from config.metrics import metrics
from reports.admin_views import reports_urlpatterns


class FaviconView(RedirectView):
    """``/favicon.ico``, which browsers ask for whatever the pages link: the static file (its
    URL looked up per request, so that the manifest need not exist when URLs are loaded)."""

    permanent = True

    def get_redirect_url(self, *args, **kwargs):
        return static("creditdesk/favicon.ico")


urlpatterns = [
    path("admin/credit-usage/", include("reports.admin_views")),
    path("admin/reports/", include(reports_urlpatterns)),
    path("health/", health, name="health"),
    path("metrics", metrics, name="metrics"),
    path("favicon.ico", FaviconView.as_view(), name="favicon"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/schema/swagger/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger"),
    path(
        "api/schema/redoc/",
        # ReDoc's sidebar shows its maker's logo from their site (hidden if it cannot load).
        csp_update({"img-src": ["https://cdn.redoc.ly"]})(
            SpectacularRedocView.as_view(url_name="schema")
        ),
        name="redoc",
    ),
    path("api/v1/", include("accounts.api_urls")),
    path("api/v1/", include("credits.api_urls")),
    path("api/v1/", include("credits.limits_urls")),
    path("api/v1/", include("credits.grants_urls")),
    path("api/v1/", include("credits.webhooks_urls")),
    path("api/v1/", include("reports.api_urls")),
    path("api/v1/", include("reports.schedule_urls")),
    path("", include("reports.unsubscribe_urls")),
    path("", include("reports.urls")),
]

handler400 = "core.api_errors.bad_request"
handler404 = "core.api_errors.not_found"
handler500 = "core.api_errors.server_error"
