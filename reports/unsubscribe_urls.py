from django.urls import path

from .unsubscribe import unsubscribe_view

urlpatterns = [
    path("reports/unsubscribe/<str:token>/", unsubscribe_view, name="report-unsubscribe"),
]
