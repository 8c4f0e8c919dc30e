"""What subscription admins' management endpoints share, in every app: who may call them
(a person who administers a subscription, never an API key), which subscription a request acts
on (``?subscription=<id>``), and how the schema documents both."""

from django.db.models import F
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from core.detail_api import error_responses
from core.pagination import list_schema, paginated_response
from core.serializers import SUBSCRIPTION_ID, SubscriptionIdField

from .authentication import KeyPrincipal
from .models import ApiKey, Environment, Subscription

SUBSCRIPTION_PARAMETER = OpenApiParameter(
    "subscription",
    SUBSCRIPTION_ID,
    description=(
        "Id of a subscription you administer. Optional when you administer one; otherwise "
        "your first top-level subscription is used."
    ),
)
ERRORS = error_responses(
    invalid="Invalid input: `validation_error`.",
    forbidden="Not a subscription admin, or called with an API key.",
    not_found="Not found among the subscriptions you administer.",
)


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


class AdministersOrManages(PersonWhoMay):
    """A person who administers a subscription or manages an environment: who keeps report
    schedules and alert rules."""

    def may(self, user) -> bool:
        return (
            Subscription.objects.administered_by(user).exists()
            or Environment.objects.managed_by(user).exists()
        )


def subscription_for_new(request, *, subscription_id, environment, refusal: dict) -> Subscription:
    """The subscription a new schedule or rule goes in: the one named (among the caller's,
    else a 404), the environment's, or the first the caller administers; a 400 with
    ``refusal`` when there is none."""
    if subscription_id is not None:
        return get_object_or_404(Subscription.objects.visible_to(request.user), pk=subscription_id)
    if environment is not None:
        return environment.project.subscription
    subscription = (
        Subscription.objects.administered_by(request.user)
        .order_by(F("parent_id").asc(nulls_first=True), "pk")
        .first()
    )
    if subscription is None:
        raise ValidationError(refusal)
    return subscription


def environment_named(request, public_id) -> Environment | None:
    """The environment an input's ``environment`` names by its EnvironmentId, among those the
    caller sees (None for none); anything else is a 400 on that field."""
    if public_id is None:
        return None
    environment = (
        Environment.objects.visible_to(request.user)
        .select_related("project__subscription")
        .filter(public_id=public_id)
        .first()
    )
    if environment is None:
        raise ValidationError(
            {"environment": ["No environment with this EnvironmentId in your subscriptions."]}
        )
    return environment


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


def subscription_list_schema(item_serializer, *, component_name: str, **schema):
    """A GET of the chosen subscription's rows, a page at a time, in the schema."""
    return list_schema(
        item_serializer,
        component_name=component_name,
        errors=ERRORS,
        parameters=[SUBSCRIPTION_PARAMETER],
        **schema,
    )


def subscription_create_schema(created, *, refusals: dict, **schema):
    """A POST that adds a row to the chosen subscription, in the schema: ``created`` (201),
    or one of ``ERRORS`` as ``refusals`` detail them."""
    return extend_schema(
        parameters=[SUBSCRIPTION_PARAMETER],
        responses={201: created, **ERRORS, **refusals},
        **schema,
    )


def administered_rows(request, model):
    """The rows of ``model`` the caller sees in the subscription the request acts on."""
    return model.objects.visible_to(request.user).filter(
        subscription=administered_subscription(request)
    )


class ManagementView(APIView):
    permission_classes = [IsSubscriptionAdmin]

    def page(self, rows, serializer_class) -> Response:
        """One page of ``rows``, as ``serializer_class`` shows them."""
        return paginated_response(
            results=rows, serializer_class=serializer_class, request=self.request, view=self
        )
