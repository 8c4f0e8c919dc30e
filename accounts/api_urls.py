from django.urls import path

from . import api

urlpatterns = [
    path("auth/token/", api.ObtainTokenApi.as_view(), name="auth-token"),
    path("api-keys/", api.ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("api-keys/<str:key_id>/", api.ApiKeyDetailApi.as_view(), name="api-key"),
    path("api-keys/<str:key_id>/revoke/", api.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
    path("subscription/", api.SubscriptionDetailApi.as_view(), name="subscription"),
]
