from django.urls import path

from . import webhooks_api

urlpatterns = [
    path("webhooks/", webhooks_api.WebhookListApi.as_view(), name="webhooks"),
    path("webhooks/<int:endpoint_id>/", webhooks_api.WebhookDetailApi.as_view(), name="webhook"),
    path(
        "webhooks/<int:endpoint_id>/rotate/",
        webhooks_api.WebhookRotateApi.as_view(),
        name="webhook-rotate",
    ),
    path(
        "webhooks/<int:endpoint_id>/test/",
        webhooks_api.WebhookTestApi.as_view(),
        name="webhook-test",
    ),
    path(
        "webhooks/<int:endpoint_id>/deliveries/",
        webhooks_api.WebhookDeliveryListApi.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "webhooks/<int:endpoint_id>/deliveries/<int:delivery_id>/redeliver/",
        webhooks_api.WebhookRedeliverApi.as_view(),
        name="webhook-redeliver",
    ),
]
