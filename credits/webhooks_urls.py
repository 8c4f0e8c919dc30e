from django.urls import path

from . import webhooks_api

ONE = "webhooks/<int:endpoint_id>/"

urlpatterns = [
    path("webhooks/", webhooks_api.WebhookListApi.as_view(), name="webhooks"),
    path(ONE, webhooks_api.WebhookDetailApi.as_view(), name="webhook"),
    path(f"{ONE}rotate/", webhooks_api.WebhookRotateApi.as_view(), name="webhook-rotate"),
    path(f"{ONE}test/", webhooks_api.WebhookTestApi.as_view(), name="webhook-test"),
    path(
        f"{ONE}deliveries/",
        webhooks_api.WebhookDeliveryListApi.as_view(),
        name="webhook-deliveries",
    ),
    path(
        f"{ONE}deliveries/<int:delivery_id>/redeliver/",
        webhooks_api.WebhookRedeliverApi.as_view(),
        name="webhook-redeliver",
    ),
]
