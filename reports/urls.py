from django.contrib.auth.views import LogoutView
from django.urls import path
from django.views.generic import RedirectView

from . import alert_rule_views, schedule_views, views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="my-usage"), name="home"),
    path("usage/", views.my_usage, name="my-usage"),
    path("usage/environments/", views.environment_usage, name="environment-usage"),
    path(
        "usage/environments/members/<int:user_id>/",
        views.environment_member_usage,
        name="environment-member-usage",
    ),
    path("usage/reports/", views.reports, name="reports-page"),
    path(
        "usage/reports/<slug:slug>/download/",
        views.report_download,
        name="report-download",
    ),
    # A project manager's report schedules and alert rules.
    *schedule_views.PAGES.urls(**{"send-test": schedule_views.schedule_send_test}),
    *alert_rule_views.PAGES.urls(),
    path(
        "exports/download/<str:token>/",
        views.large_export_download,
        name="large-export-download",
    ),
    path("login/", views.UsageLoginView.as_view(), name="usage-login"),
    path("logout/", LogoutView.as_view(next_page="usage-login"), name="usage-logout"),
]
