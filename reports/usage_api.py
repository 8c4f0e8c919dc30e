"""``GET /api/v1/usage/``: credits, runs and tokens per window (local hour, day or month),
grouped by any dimensions, as paginated JSON or a CSV file.

People (a session or a personal token) and API keys alike: each reads what ``visible_to``
shows it (an admin the subscription, a project manager their environments, a member their own
usage, a key its subscription or environment). The figures come from the rollups through
``reports.usage_series``; their totals equal the reports' for the same days and scope.
"""

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import permissions, serializers
from rest_framework.response import Response

from core.serializers import SubscriptionRefSerializer
from credits.pruning import HOURLY_USAGE_RETENTION_DAYS

from . import selectors
from .api import (
    COMMON_ERRORS,
    FORMAT_PARAMETER,
    PAGE_PARAMETERS,
    PAGING_PARAMETERS,
    SUBSCRIPTION_PARAMETER,
    CsvOrJsonApi,
    ParametersSerializer,
    ReportPagination,
    error_responses,
)
from .catalogue import PLANS_WITH_TEAM_VIEWS
from .exports import CsvTable, csv_filename, csv_response
from .usage_series import (
    CREDIT_TYPES,
    DIMENSIONS,
    FILTERS,
    MAX_DAYS,
    MAX_HOURS,
    MAX_MONTHS,
    SUMMED_COLUMNS,
    WINDOWS,
    usage_series,
)

# What each filter takes (the id or name the rows give for it).
FILTER_VALUES = {
    "user": (OpenApiTypes.INT, "User id (`user_id` in the rows)."),
    "team": (OpenApiTypes.INT, "Team id: usage of the team's members."),
    "environment": (OpenApiTypes.UUID, "EnvironmentId (`environment_id` in the rows)."),
    "project": (OpenApiTypes.INT, "Project id (`project_id` in the rows)."),
    "product": (OpenApiTypes.STR, "Product slug (`product_id` in the rows)."),
    "feature": (OpenApiTypes.STR, "Feature name."),
    "agent": (OpenApiTypes.INT, "Agent id (`agent_id` in the rows)."),
    "model": (OpenApiTypes.STR, "Model name."),
    "api_key": (OpenApiTypes.STR, "API key id: its prefix (`api_key_id` in the rows)."),
    "sub_account": (OpenApiTypes.INT, "Subscription id, with `include_sub_accounts=true`."),
    "credit_type": (
        OpenApiTypes.STR,
        "`base` (credits less grant and excess), `grant` or `excess`.",
    ),
}
ALLOWED = [
    "subscription",
    "window",
    "group_by",
    "from",
    "to",
    "include_sub_accounts",
    *FILTERS,
    *PAGING_PARAMETERS,
]


class UsageParametersSerializer(ParametersSerializer):
    subscription = serializers.IntegerField(min_value=1, required=False)
    window = serializers.CharField(default="day")
    group_by = serializers.CharField(default="", allow_blank=True)
    include_sub_accounts = serializers.BooleanField(default=False)
    # Checked here, not only by the paginator (which reads a bad value as the default): every
    # parameter of this endpoint is optional, so a bad one would otherwise pass unnoticed.
    page = serializers.IntegerField(min_value=1, required=False)
    page_size = serializers.IntegerField(
        min_value=1, max_value=ReportPagination.max_page_size, required=False
    )


def _column_field(name: str) -> serializers.Field:
    if name in ("credits", "excess_credits", "grant_credits"):
        return serializers.DecimalField(18, 4, coerce_to_string=True)
    if name == "cost":
        return serializers.CharField(
            allow_null=True,
            help_text="What the row cost, rounded once to the currency's minor unit (half to "
            "even); null without a price, for readers who do not administer the subscription, "
            "and on rows split by credit type.",
        )
    if name == "currency":
        return serializers.CharField(allow_null=True, help_text="ISO 4217 code of cost.")
    if name in ("runs", "failed_runs", "input_tokens", "output_tokens"):
        return serializers.IntegerField()
    if name == "window_start":
        return serializers.CharField(
            help_text="The window's start: a local date (day, month), or a date and time with "
            "the subscription's UTC offset then (hour)."
        )
    return serializers.CharField(
        allow_null=True, required=False, help_text="Only when grouped by it; null for none."
    )


ROW_COLUMNS = [
    "window_start",
    *(column for name, spec in DIMENSIONS.items() for column in spec.columns(name)),
    *SUMMED_COLUMNS,
]

DESCRIPTION = f"""Credits, runs and tokens per window and group, from the rollups.

* `window`: `hour`, `day` (default) or `month`, in the subscription's time zone (DST included:
  the hour that repeats when DST ends is two windows, with their UTC offsets).
* `from`, `to`: a local day (`YYYY-MM-DD`: `from` starts at its midnight, `to` includes it) or
  an ISO 8601 date and time (an instant; `from` included, `to` excluded; local time without an
  offset). Day and month windows take days. Defaults: the last 24 hours, 30 days or 12 months.
  At most {MAX_HOURS // 24} days of hours (kept for {HOURLY_USAGE_RETENTION_DAYS} days),
  {MAX_DAYS} days, or {MAX_MONTHS} months.
* `group_by`: comma-separated, any of {", ".join(f"`{name}`" for name in DIMENSIONS)}. Each
  adds `<name>_id` and `<name>` (its name) to the rows; `model`, `feature` and `credit_type`
  are their own name. `team` is the person's team now; `project` the environment's;
  `sub_account` the account (with `include_sub_accounts=true`); `credit_type` splits each
  group's credits into `base` (credits less grant and excess), `grant` and `excess`, runs and
  tokens counting with `base`. Grouping by `user` or `team` names people:
  {PLANS_WITH_TEAM_VIEWS} plans.
* Filters, one value each: {", ".join(f"`{name}`" for name in FILTERS)}. A value you cannot
  see is unknown (`invalid_filter`), whoever it belongs to.

Admins see their subscription's usage, project managers their environments', members their
own; an API key its subscription's, or its environment's. Rows are in window order; JSON is
paginated with the totals, equal to the reports' for the same days and scope. CSV has the same
columns, streamed, with a UTF-8 byte-order mark. Credits are exact decimal strings; `cost` is
each row's, rounded once to its currency's minor unit, for the subscription's admins only, and
not on rows split by credit type."""


class UsageApi(CsvOrJsonApi):
    # People and API keys alike: ``visible_to`` scopes each.
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        tags=["reports"],
        operation_id="usage_query",
        summary="Usage grouped by any dimensions, per hour, day or month",
        description=DESCRIPTION,
        parameters=[
            OpenApiParameter("window", OpenApiTypes.STR, enum=list(WINDOWS)),
            OpenApiParameter(
                "group_by",
                OpenApiTypes.STR,
                description="Comma-separated: " + ", ".join(DIMENSIONS) + ".",
            ),
            OpenApiParameter("from", OpenApiTypes.STR, description="A date or date and time."),
            OpenApiParameter("to", OpenApiTypes.STR, description="A date or date and time."),
            SUBSCRIPTION_PARAMETER,
            OpenApiParameter(
                "include_sub_accounts",
                OpenApiTypes.BOOL,
                description="Add the usage of the sub-accounts you can see.",
            ),
            *(
                OpenApiParameter(
                    name,
                    # A filter given empty is refused (`invalid_filter`): leave it out instead.
                    {"type": "string", "minLength": 1} if kind == OpenApiTypes.STR else kind,
                    description=text,
                    enum=list(CREDIT_TYPES) if name == "credit_type" else None,
                )
                for name, (kind, text) in FILTER_VALUES.items()
            ),
            FORMAT_PARAMETER,
            # Bounded, as UsageParametersSerializer checks them (the reports' paginator reads
            # a bad page as the default instead).
            *(
                OpenApiParameter(
                    parameter.name,
                    {"type": "integer", "minimum": 1, **maximum},
                    description=parameter.description,
                )
                for parameter, maximum in zip(
                    PAGE_PARAMETERS, ({}, {"maximum": ReportPagination.max_page_size}), strict=True
                )
            ),
        ],
        responses={
            (200, "application/json"): inline_serializer(
                "UsagePage",
                {
                    "subscription": SubscriptionRefSerializer(),
                    "timezone": serializers.CharField(),
                    "window": serializers.ChoiceField(WINDOWS),
                    "from": serializers.CharField(help_text="The range's first instant."),
                    "to": serializers.CharField(help_text="The instant after its last."),
                    "group_by": serializers.ListField(child=serializers.CharField()),
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "totals": inline_serializer(
                        "UsageTotals", {name: _column_field(name) for name in SUMMED_COLUMNS}
                    ),
                    "results": inline_serializer(
                        "UsageRow", {name: _column_field(name) for name in ROW_COLUMNS}, many=True
                    ),
                },
            ),
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description="The rows' columns as a CSV file."
            ),
            **error_responses(
                {
                    400: "`invalid_usage_query` (window, group_by, from, to; details name the "
                    "parameter), `invalid_filter` or `validation_error`."
                }
            ),
            **COMMON_ERRORS,
            **error_responses(
                {
                    403: "`plan_required`: grouping by user or team on a plan without "
                    "per-member usage.",
                    404: "`not_found`: not one of your subscriptions.",
                }
            ),
        },
    )
    def get(self, request):
        parameters = UsageParametersSerializer(
            data=request.query_params, context={"allowed": ALLOWED}
        )
        parameters.is_valid(raise_exception=True)
        options = parameters.validated_data
        subscription = selectors.report_subscription(
            user=request.user, subscription_id=options.get("subscription")
        )
        series = usage_series(
            principal=request.user,
            subscription=subscription,
            window=options["window"],
            group_by=options["group_by"],
            start=request.query_params.get("from"),
            end=request.query_params.get("to"),
            filters={
                name: request.query_params[name] for name in FILTERS if name in request.query_params
            },
            include_sub_accounts=options["include_sub_accounts"],
            now=timezone.now(),
        )
        rows = series.pages()
        if self.wants_csv():
            table = CsvTable(
                columns=series.columns, rows=iter(rows), text_columns=series.text_columns
            )
            label = f"{series.range.first_day:%Y-%m-%d}_{series.range.last_day:%Y-%m-%d}"
            filename = csv_filename(
                subscription=subscription, report=f"usage-{series.window}", timeframe_label=label
            )
            return csv_response(request.accepted_renderer, table, filename=filename)
        paginator = ReportPagination()
        page = paginator.paginate_queryset(rows, request, view=self)
        totals = series.totals()
        return Response(
            {
                "subscription": SubscriptionRefSerializer(subscription).data,
                "timezone": subscription.timezone,
                "window": series.window,
                "from": series.window_start(series.range.start),
                "to": series.window_start(series.range.end),
                "group_by": series.group_by,
                "count": paginator.page.paginator.count,
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
                "totals": dict(zip(SUMMED_COLUMNS, totals, strict=True)),
                "results": [dict(zip(series.columns, row, strict=True)) for row in page],
            }
        )
