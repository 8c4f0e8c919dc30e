from django.urls import path

from . import alert_rules_api

urlpatterns = [
    path("alert-rules/", alert_rules_api.AlertRuleListApi.as_view(), name="alert-rules"),
    path(
        "alert-rules/<int:rule_id>/",
        alert_rules_api.AlertRuleDetailApi.as_view(),
        name="alert-rule",
    ),
]
