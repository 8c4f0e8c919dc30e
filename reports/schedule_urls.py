from django.urls import path

from . import schedule_api

urlpatterns = [
    path(
        "report-schedules/",
        schedule_api.ReportScheduleListApi.as_view(),
        name="report-schedules",
    ),
    path(
        "report-schedules/<int:schedule_id>/",
        schedule_api.ReportScheduleDetailApi.as_view(),
        name="report-schedule",
    ),
]
