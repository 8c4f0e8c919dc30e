from django.urls import path

from . import grants_api

urlpatterns = [
    path("grants/", grants_api.GrantListApi.as_view(), name="grants"),
]
