from django.urls import path

from . import limits_api

urlpatterns = [
    path("limits/", limits_api.LimitListApi.as_view(), name="limits"),
    path("limits/users/<int:user_id>/", limits_api.UserLimitApi.as_view(), name="user-limit"),
    path("limits/teams/<int:team_id>/", limits_api.TeamLimitApi.as_view(), name="team-limit"),
]
