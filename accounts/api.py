"""People's API: personal tokens, and what subscription admins manage (API keys, limit settings).

Management endpoints act on one subscription the caller administers: ``?subscription=<id>``
picks it, and without it the caller's only (or first) subscription is used; other apps'
management endpoints share these rules (``accounts.permissions``). Machines (API keys) cannot
manage anything: a leaked key must not be able to mint more keys.
"""

import hashlib
from collections.abc import Mapping

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import permissions, serializers, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from core.money import AMOUNT_HELP, CREDIT_DIGITS, CreditsField
from core.serializers import NullableUUIDField, StrictInputSerializer

from .models import ApiKey, Environment, Subscription
from .permissions import (
    ERRORS,
    SUBSCRIPTION_PARAMETER,
    ManagementView,
    administered_rows,
    administered_subscription,
    subscription_create_schema,
    subscription_list_schema,
)
from .services import (
    create_api_key,
    obtain_api_token,
    revoke_api_key,
    set_api_key_budget,
    update_limit_settings,
)


def no_store(response: Response) -> Response:
    """Secrets must not linger in caches or browser history."""
    response["Cache-Control"] = "no-store"
    return response


# --- Personal tokens -------------------------------------------------------------------------


class TokenRateThrottle(AnonRateThrottle):
    """The ``token`` rate per client address.

    The rate is looked up on each request (DRF caches it on the class at import), so that the
    ``TOKEN_THROTTLE_RATE`` setting and test overrides take effect.
    """

    scope = "token"

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": "token_address", "ident": self.get_ident(request)}


class TokenEmailRateThrottle(TokenRateThrottle):
    """The same rate per email address: guessing one person's password from many addresses
    (or behind a spoofed ``X-Forwarded-For``) is throttled too."""

    def get_cache_key(self, request, view):
        data = request.data
        email = data.get("email") if isinstance(data, Mapping) else None
        if not isinstance(email, str) or not email.strip():
            return None
        digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
        return self.cache_format % {"scope": "token_email", "ident": digest}


class ObtainTokenApi(APIView):
    authentication_classes = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = [TokenRateThrottle, TokenEmailRateThrottle]

    @extend_schema_serializer(component_name="Token")
    class InputSerializer(StrictInputSerializer):
        email = serializers.CharField(max_length=254)
        password = serializers.CharField(max_length=4096, trim_whitespace=False)

    @extend_schema_serializer(component_name="Token")
    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField(source="key")

    @extend_schema(
        tags=["auth"],
        summary="Get your personal API token",
        description=(
            "Exchange your email (any case) and password for your token, then send "
            "`Authorization: Token <token>`. Throttled per client address and per email: "
            "`429 throttled` with `retry_after_seconds`. Wrong credentials: "
            "`400 invalid_credentials`."
        ),
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(
                description="`invalid_credentials`: no such email and password. "
                "`validation_error`: malformed input."
            ),
            429: OpenApiResponse(description="Too many attempts."),
        },
        auth=[],
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = obtain_api_token(**serializer.validated_data)
        return no_store(Response(self.OutputSerializer(token).data))


# --- API keys --------------------------------------------------------------------------------


@extend_schema_serializer(component_name="ApiKey")
class ApiKeyOutputSerializer(serializers.Serializer):
    id = serializers.CharField(
        source="prefix",
        help_text="The key's public id: its prefix, the part of the secret before the dot.",
    )
    name = serializers.CharField()
    prefix = serializers.CharField()
    environment = serializers.UUIDField(
        source="environment.public_id",
        allow_null=True,
        help_text="EnvironmentId the key is restricted to; null means every environment.",
    )
    created = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked = serializers.BooleanField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    credit_budget = serializers.DecimalField(
        **CREDIT_DIGITS,
        allow_null=True,
        help_text="The most credits the key may spend per billing period; null: no budget.",
    )


BUDGET_HELP = (
    "Credits the key may spend per billing period, enforced like a user's limit "
    f"(`402 api_key_budget_exceeded`); null for no budget. {AMOUNT_HELP}"
)


def _budget_field(**kwargs) -> CreditsField:
    return CreditsField(allow_null=True, help_text=BUDGET_HELP, **kwargs)


class ApiKeyListCreateApi(ManagementView):
    @extend_schema_serializer(component_name="ApiKeyCreate")
    class InputSerializer(StrictInputSerializer):
        name = serializers.CharField(max_length=50)
        environment = NullableUUIDField(
            required=False,
            allow_null=True,
            help_text="EnvironmentId to restrict the key to; omit for every environment.",
        )
        credit_budget = _budget_field(required=False)

    @extend_schema_serializer(component_name="ApiKeyCreated")
    class OutputSerializer(ApiKeyOutputSerializer):
        key = serializers.CharField(help_text="The secret. Shown once, never again.")

    @subscription_list_schema(
        ApiKeyOutputSerializer,
        component_name="ApiKeyPage",
        tags=["api keys"],
        summary="List the subscription's API keys",
    )
    def get(self, request):
        keys = administered_rows(request, ApiKey).select_related("environment")
        return self.page(keys.order_by("-created", "prefix"), ApiKeyOutputSerializer)

    @subscription_create_schema(
        OutputSerializer,
        refusals={
            400: OpenApiResponse(
                description="`validation_error`: malformed input, or an `environment` that is "
                "not one of the subscription's."
            ),
        },
        tags=["api keys"],
        summary="Create an API key",
        description="The response carries the secret as `key`: store it now, it is not shown "
        "again.",
        request=InputSerializer,
    )
    def post(self, request):
        subscription = administered_subscription(request)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        environment = None
        if public_id := serializer.validated_data.get("environment"):
            environment = (
                Environment.objects.visible_to(request.user)
                .filter(project__subscription=subscription, public_id=public_id)
                .first()
            )
            if environment is None:
                raise serializers.ValidationError(
                    {"environment": ["No environment with this EnvironmentId in the subscription."]}
                )
        api_key, secret = create_api_key(
            subscription=subscription,
            name=serializer.validated_data["name"],
            environment=environment,
            created_by=request.user,
            credit_budget=serializer.validated_data.get("credit_budget"),
        )
        api_key.key = secret
        return no_store(
            Response(self.OutputSerializer(api_key).data, status=status.HTTP_201_CREATED)
        )


def _administered_key(request, key_id: str) -> ApiKey:
    """A key of a subscription the caller administers, by its id (prefix); else a 404."""
    return get_object_or_404(
        ApiKey.objects.visible_to(request.user).select_related("environment"), prefix=key_id
    )


class ApiKeyDetailApi(ManagementView):
    @extend_schema_serializer(component_name="ApiKeyUpdate")
    class InputSerializer(StrictInputSerializer):
        credit_budget = _budget_field(required=False)

        # Set when the key is made (or revoked, by its own action).
        fixed_fields = ("id", "name", "prefix", "environment", "created", "last_used_at")
        fixed_fields += ("revoked", "revoked_at")

    @extend_schema(
        tags=["api keys"],
        operation_id="api_keys_key_retrieve",
        summary="An API key",
        description="The key is found among all the subscriptions you administer.",
        responses={200: ApiKeyOutputSerializer, **ERRORS},
    )
    def get(self, request, key_id: str):
        return Response(ApiKeyOutputSerializer(_administered_key(request, key_id)).data)

    @extend_schema(
        tags=["api keys"],
        operation_id="api_keys_key_partial_update",
        summary="Set or remove an API key's credit budget",
        description="`credit_budget` is the only writable field (omitted: nothing changes). "
        "Like a user's limit, it applies at once to what the key already used in the current "
        "period: a budget below that blocks the key (`402 api_key_budget_exceeded`) until the "
        "period resets.",
        request=InputSerializer,
        responses={200: ApiKeyOutputSerializer, **ERRORS},
    )
    def patch(self, request, key_id: str):
        api_key = _administered_key(request, key_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if "credit_budget" in serializer.validated_data:
            api_key = set_api_key_budget(
                api_key=api_key,
                credit_budget=serializer.validated_data["credit_budget"],
                actor=request.user,
            )
        return Response(ApiKeyOutputSerializer(api_key).data)


class ApiKeyRevokeApi(ManagementView):
    @extend_schema(
        tags=["api keys"],
        summary="Revoke an API key",
        description="Takes effect at once and cannot be undone. Revoking twice is harmless. "
        "The key is found among all the subscriptions you administer.",
        request=None,
        responses={200: ApiKeyOutputSerializer, **ERRORS},
    )
    def post(self, request, key_id: str):
        api_key = revoke_api_key(api_key=_administered_key(request, key_id), actor=request.user)
        return Response(ApiKeyOutputSerializer(api_key).data)


# --- Subscription settings -------------------------------------------------------------------


class SubscriptionDetailApi(ManagementView):
    @extend_schema_serializer(component_name="SubscriptionSettings")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        name = serializers.CharField()
        plan = serializers.CharField()
        timezone = serializers.CharField()
        base_allocation = serializers.DecimalField(**CREDIT_DIGITS)
        limit_mode = serializers.ChoiceField(choices=Subscription.LimitMode.choices)
        excess_allowance = serializers.DecimalField(**CREDIT_DIGITS)

    @extend_schema_serializer(component_name="SubscriptionSettingsUpdate")
    class InputSerializer(StrictInputSerializer):
        limit_mode = serializers.ChoiceField(choices=Subscription.LimitMode.choices, required=False)
        excess_allowance = CreditsField(required=False, help_text=AMOUNT_HELP)

        # An admin sending base_allocation must not believe their allocation changed.
        fixed_fields = ("id", "name", "plan", "timezone", "base_allocation")

    @extend_schema(
        tags=["subscription"],
        summary="The subscription's plan, allocation and limit settings",
        parameters=[SUBSCRIPTION_PARAMETER],
        responses={200: OutputSerializer, **ERRORS},
    )
    def get(self, request):
        subscription = administered_subscription(request)
        return Response(self.OutputSerializer(subscription).data)

    @extend_schema(
        tags=["subscription"],
        summary="Change the limit mode and excess allowance",
        description="`limit_mode` (`hard` or `soft`) and `excess_allowance` (decimal string, "
        "at most 4 decimal places) are writable; the other fields are read-only. A change "
        "applies from now on to the usage already recorded in the current period.",
        parameters=[SUBSCRIPTION_PARAMETER],
        request=InputSerializer,
        responses={200: OutputSerializer, **ERRORS},
    )
    def patch(self, request):
        subscription = administered_subscription(request)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        subscription = update_limit_settings(
            subscription=subscription,
            limit_mode=serializer.validated_data.get("limit_mode", subscription.limit_mode),
            excess_allowance=serializer.validated_data.get(
                "excess_allowance", subscription.excess_allowance
            ),
            actor=request.user,
        )
        return Response(self.OutputSerializer(subscription).data)
