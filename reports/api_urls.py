from django.urls import path

from . import api, usage_api

urlpatterns = [
    path(
        "exports/credit-usage/",
        api.CreditUsageExportApi.as_view(),
        name="export-credit-usage",
    ),
    path("usage/", usage_api.UsageApi.as_view(), name="usage"),
    *(
        path(f"reports/{slug}/", view.as_view(), name=f"report-{slug}")
        for slug, view in api.REPORT_VIEWS.items()
    ),
]
