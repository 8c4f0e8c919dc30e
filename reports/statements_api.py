"""Monthly statements over the API, for subscription admins: ``GET /api/v1/statements/`` (the
closed periods, newest first) and ``GET /api/v1/statements/<YYYY-MM>/`` (one statement, JSON or
``?format=csv``). The subscription is chosen with ``?subscription=<id>`` among those the caller
administers, as on the other management endpoints; the figures come from
``reports.statements``."""

from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.response import Response

from accounts.permissions import IsSubscriptionAdmin, ManagementView, administered_subscription
from core.pagination import list_schema
from core.serializers import SUBSCRIPTION_ID, SubscriptionRefSerializer

from . import statements
from .api import FORMAT_PARAMETER, CsvOrJsonApi, ReportPagination, error_responses
from .exports import csv_response

TAGS = ["statements"]
# YYYY-MM in the years a billing period can hold (credits.periods, 0002 to 9998), so that a
# month the schema allows is never `invalid_month`.
MONTH_PATTERN = (
    "^(000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
    "-(0[1-9]|1[0-2])$"
)
SUBSCRIPTION_PARAMETER = OpenApiParameter(
    "subscription",
    SUBSCRIPTION_ID,
    description="Id of a subscription (or sub-account) you administer; by default your first "
    "top-level one.",
)
ERRORS = error_responses(
    {
        400: "`validation_error`: a malformed parameter.",
        401: "Not authenticated.",
        403: "`permission_denied`: not a subscription admin, or an API key.",
        404: "`not_found`: not a subscription you administer.",
    }
)


class StatementPeriodSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(help_text="Excluded.")


@extend_schema_serializer(component_name="StatementSummary")
class StatementSummarySerializer(serializers.Serializer):
    month = serializers.CharField(help_text="YYYY-MM, in the subscription's time zone.")
    period = StatementPeriodSerializer()
    closed_at = serializers.DateTimeField(help_text="When its grace window for late events ended.")
    url = serializers.URLField()


def _money(help_text: str) -> serializers.CharField:
    return serializers.CharField(
        allow_null=True, help_text=f"{help_text} A decimal as a string; null when not priced."
    )


LINE_KINDS = [
    "base_allocation",
    "base",
    "excess",
    "grant_bought",
    "grants_used",
    "lapsed",
    "late_correction",
    "sub_account",
]
# Made with ``type`` because one field is named ``from``, a Python keyword.
StatementLineSerializer = extend_schema_serializer(component_name="StatementLine")(
    type(
        "StatementLineSerializer",
        (serializers.Serializer,),
        {
            "kind": serializers.ChoiceField(choices=LINE_KINDS),
            "description": serializers.CharField(),
            "from": serializers.DateTimeField(
                allow_null=True, help_text="A usage line's price interval; a grant's start."
            ),
            "to": serializers.DateTimeField(
                allow_null=True, help_text="Excluded; a grant's expiry (null: none)."
            ),
            "credits": serializers.CharField(
                allow_null=True, help_text="Credits, as a decimal string."
            ),
            "unit_price": _money("Per credit, at the price in effect from `from` to `to`."),
            "amount": _money("Rounded once to the currency's minor unit, half to even."),
        },
    )
)


@extend_schema_serializer(component_name="Statement")
class StatementSerializer(serializers.Serializer):
    subscription = SubscriptionRefSerializer()
    month = serializers.CharField()
    timezone = serializers.CharField()
    period = StatementPeriodSerializer()
    closed = serializers.BooleanField()
    closes_at = serializers.DateTimeField()
    currency = serializers.CharField(allow_null=True, help_text="ISO 4217; null: no price.")
    lines = StatementLineSerializer(many=True)
    total = _money("The sum of the lines' amounts.")


class StatementListApi(ManagementView):
    @list_schema(
        StatementSummarySerializer,
        component_name="StatementPage",
        errors=ERRORS,
        tags=TAGS,
        operation_id="statements_list",
        summary="The closed periods that have a statement, newest first",
        parameters=[SUBSCRIPTION_PARAMETER],
    )
    def get(self, request):
        subscription = administered_subscription(request)
        periods = statements.closed_periods(
            principal=request.user, subscription=subscription, now=timezone.now()
        )
        paginator = ReportPagination()
        page = paginator.paginate_queryset(periods, request, view=self)
        results = []
        for period in page:
            month = f"{period.start.astimezone(subscription.zone):%Y-%m}"
            results.append(
                {
                    "month": month,
                    "period": {"start": period.start, "end": period.end},
                    "closed_at": period.end + statements.grace(),
                    "url": request.build_absolute_uri(
                        f"{reverse('statement', kwargs={'month': month})}"
                        f"?{urlencode({'subscription': subscription.pk})}"
                    ),
                }
            )
        return paginator.get_paginated_response(StatementSummarySerializer(results, many=True).data)


class StatementApi(CsvOrJsonApi):
    permission_classes = [IsSubscriptionAdmin]

    @extend_schema(
        tags=TAGS,
        operation_id="statements_read",
        summary="One closed period's statement, as JSON or CSV",
        description="Lines: the base allocation; base and excess credits at each price in "
        "effect during the period (a mid-period change gives two lines); each grant bought; "
        "the credits drawn from grants and lapsed; corrections to earlier periods recorded "
        "after they closed; at a parent, each sub-account's total. Each amount is rounded "
        "once; the total is their sum. Immutable once the period's grace window ended.",
        parameters=[
            OpenApiParameter(
                "month",
                {"type": "string", "pattern": MONTH_PATTERN},
                OpenApiParameter.PATH,
                description="YYYY-MM, in the subscription's time zone: 0002-01 to 9998-12.",
            ),
            SUBSCRIPTION_PARAMETER,
            FORMAT_PARAMETER,
        ],
        responses={
            (200, "application/json"): StatementSerializer,
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description="The lines, then the total, as a CSV file."
            ),
            **ERRORS,
            **error_responses(
                {
                    400: "`invalid_month`: not YYYY-MM, or outside the years periods can "
                    "hold. `validation_error`: a malformed parameter.",
                    404: "`statement_not_found`: no period in that month. `not_found`: not a "
                    "subscription you administer.",
                    409: "`period_not_closed`: the period is open or in its grace window.",
                }
            ),
        },
    )
    def get(self, request, month: str):
        subscription = administered_subscription(request)
        statement = statements.statement_for(
            principal=request.user,
            subscription=subscription,
            month=statements.parse_month(month),
            now=timezone.now(),
        )
        if self.wants_csv():
            return csv_response(
                request.accepted_renderer,
                statements.statement_table(statement),
                filename=statements.statement_filename(statement),
            )
        return Response(StatementSerializer(statements.statement_data(statement)).data)
