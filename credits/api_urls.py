from django.urls import path

from . import api

urlpatterns = [
    path("events/", api.RecordEventView.as_view(), name="record-event"),
    path("events/batch/", api.RecordBatchView.as_view(), name="record-batch"),
    path("balance/", api.BalanceView.as_view(), name="balance"),
]
