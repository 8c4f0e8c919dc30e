"""What subscription admins' management endpoints share, in every app: who may call them
(a person who administers a subscription, never an API key), which subscription a request acts
on (``?subscription=<id>``), and how the schema documents both."""

from django.db.models import F
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import permissions, serializers
from rest_framework.exceptions import NotFound
from rest_framework.views import APIView

from core.serializers import SUBSCRIPTION_ID, SubscriptionIdField

from .authentication import KeyPrincipal
from .models import ApiKey, Subscription

SUBSCRIPTION_PARAMETER = OpenApiParameter(
    "subscription",
    SUBSCRIPTION_ID,
    description=(
        "Id of a subscription you administer. Optional when you administer one; otherwise "
        "your first top-level subscription is used."
    ),
)
ERRORS = {
    400: OpenApiResponse(description="Invalid input: `validation_error`."),
    401: OpenApiResponse(description="Not authenticated."),
    403: OpenApiResponse(description="Not a subscription admin, or called with an API key."),
    404: OpenApiResponse(description="Not found among the subscriptions you administer."),
}


class PersonWhoMay(permissions.BasePermission):
    """A signed-in person, never an API key, for whom ``may(user)`` holds."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        if isinstance(user, KeyPrincipal) or isinstance(request.auth, ApiKey):
            return False
        return bool(user and user.is_authenticated) and self.may(user)

    def may(self, user) -> bool:
        raise NotImplementedError


class IsSubscriptionAdmin(PersonWhoMay):
    """A person who administers at least one subscription."""

    message = "Only subscription admins can manage API keys, limits and subscription settings."

    def may(self, user) -> bool:
        return Subscription.objects.administered_by(user).exists()


class SubscriptionChoiceSerializer(serializers.Serializer):
    subscription = SubscriptionIdField()


def administered_subscription(request) -> Subscription:
    """The subscription a management request acts on, chosen with ``?subscription=<id>``.

    Without the parameter: the caller's only subscription, or the first top-level one they
    administer (oldest first). A subscription they do not administer is a 404.
    """
    choice = SubscriptionChoiceSerializer(data=request.query_params)
    choice.is_valid(raise_exception=True)
    subscriptions = Subscription.objects.administered_by(request.user)
    if "subscription" in choice.validated_data:
        return get_object_or_404(subscriptions, pk=choice.validated_data["subscription"])
    subscription = subscriptions.order_by(F("parent_id").asc(nulls_first=True), "pk").first()
    if subscription is None:
        raise NotFound("You administer no subscription.")
    return subscription


class ManagementView(APIView):
    permission_classes = [IsSubscriptionAdmin]
