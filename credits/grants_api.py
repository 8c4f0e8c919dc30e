"""Grants over the API: a subscription admin lists and adds their subscription's top-ups and
bonuses (``?subscription=<id>``, see ``accounts.permissions``). Grants are append-only: there
is no PUT or DELETE; corrections are adjustments, made in the admin."""

from drf_spectacular.utils import OpenApiResponse, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from accounts.permissions import (
    ManagementView,
    administered_rows,
    administered_subscription,
    subscription_create_schema,
    subscription_list_schema,
)
from core.money import (
    AMOUNT_HELP,
    CREDIT_DIGITS,
    PRICE_DIGITS,
    PRICE_HELP,
    CreditsField,
    PriceField,
)
from core.serializers import StrictInputSerializer

from .grants import GRANT_COUNTERS, GRANT_FIELDS, add_grant
from .models import CreditGrant


@extend_schema_serializer(component_name="CreditGrant")
class GrantOutputSerializer(serializers.ModelSerializer):
    created_by = serializers.EmailField(source="created_by.email", allow_null=True, default=None)
    remaining = serializers.DecimalField(**CREDIT_DIGITS, read_only=True)
    price = serializers.DecimalField(**PRICE_DIGITS)

    class Meta:
        model = CreditGrant
        fields = [
            "id",
            *GRANT_FIELDS,
            "created_by",
            "created_at",
            *GRANT_COUNTERS,
            "remaining",
        ]


@extend_schema_serializer(component_name="CreditGrant")
class GrantInputSerializer(StrictInputSerializer):
    fixed_fields = ("id", "created_by", "created_at", *GRANT_COUNTERS, "remaining")

    kind = serializers.ChoiceField(choices=CreditGrant.Kind.choices)
    credits = CreditsField(help_text=f"Credits granted, above 0. {AMOUNT_HELP}")
    price = PriceField(
        required=False,
        help_text=f"The total paid, in the currency's minor unit at most (0 for a bonus). "
        f"{PRICE_HELP}",
    )
    currency = serializers.CharField(
        max_length=3, required=False, help_text="ISO 4217; default: the subscription's prices'."
    )
    effective_at = serializers.DateTimeField(
        required=False, help_text="Usable from then on; default now. Not in a closed period."
    )
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Empty: never expires."
    )
    reason = serializers.CharField(max_length=1000)


class GrantListApi(ManagementView):
    @subscription_list_schema(
        GrantOutputSerializer,
        component_name="CreditGrantPage",
        tags=["grants"],
        summary="List the subscription's grants",
    )
    def get(self, request):
        grants = administered_rows(request, CreditGrant).select_related("created_by")
        return self.page(grants.order_by("-effective_at", "-id"), GrantOutputSerializer)

    @subscription_create_schema(
        GrantOutputSerializer,
        refusals={
            400: OpenApiResponse(description="Invalid input: `invalid_grant`, `validation_error`."),
            422: OpenApiResponse(description="`period_closed`: the effective date's period."),
        },
        tags=["grants"],
        summary="Add a grant (a top-up or a bonus)",
        description="Credits drawn after the base allocation and before excess, earliest "
        "expiry first. Refused (`invalid_grant`, `period_closed`, `validation_error`), with "
        "nothing stored: credits not above 0, a price finer than the currency's minor unit, "
        "another currency than the subscription's prices', an effective date in a closed "
        "period.",
        request=GrantInputSerializer,
    )
    def post(self, request):
        subscription = administered_subscription(request)
        serializer = GrantInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        grant = add_grant(
            subscription=subscription, created_by=request.user, **serializer.validated_data
        )
        return Response(GrantOutputSerializer(grant).data, status=status.HTTP_201_CREATED)
