from django.urls import path

from . import api, statements_api, usage_api

urlpatterns = [
    path(
        "exports/credit-usage/",
        api.CreditUsageExportApi.as_view(),
        name="export-credit-usage",
    ),
    path("usage/", usage_api.UsageApi.as_view(), name="usage"),
    path("statements/", statements_api.StatementListApi.as_view(), name="statements"),
    path("statements/<str:month>/", statements_api.StatementApi.as_view(), name="statement"),
    *(
        path(f"reports/{slug}/", view.as_view(), name=f"report-{slug}")
        for slug, view in api.REPORT_VIEWS.items()
    ),
]
