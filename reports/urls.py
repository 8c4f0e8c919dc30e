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
    # A project manager's report schedules.
    path("usage/schedules/", schedule_views.schedule_list, name="usage-schedules"),
    path("usage/schedules/new/", schedule_views.schedule_form, name="usage-schedule-new"),
    path("usage/schedules/<int:schedule_id>/", schedule_views.schedule_form, name="usage-schedule"),
    *(
        path(f"usage/schedules/<int:schedule_id>/{action}/", view, name=f"usage-schedule-{action}")
        for action, view in {
            "pause": schedule_views.schedule_pause,
            "delete": schedule_views.schedule_delete,
            "send-test": schedule_views.schedule_send_test,
        }.items()
    ),
    # A project manager's alert rules.
    path("usage/alerts/", alert_rule_views.rule_list, name="usage-alerts"),
    path("usage/alerts/new/", alert_rule_views.rule_form, name="usage-alert-new"),
    path("usage/alerts/<int:rule_id>/", alert_rule_views.rule_form, name="usage-alert"),
    *(
        path(f"usage/alerts/<int:rule_id>/{action}/", view, name=f"usage-alert-{action}")
        for action, view in {
            "pause": alert_rule_views.rule_pause,
            "delete": alert_rule_views.rule_delete,
        }.items()
    ),
    path(
        "exports/download/<str:token>/",
        views.large_export_download,
        name="large-export-download",
    ),
    path("login/", views.UsageLoginView.as_view(), name="usage-login"),
    path("logout/", LogoutView.as_view(next_page="usage-login"), name="usage-logout"),
]
