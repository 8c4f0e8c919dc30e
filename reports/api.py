"""Usage reports and the credit usage export, as CSV (streamed) or JSON (paginated).

``GET /api/v1/reports/<report>/`` and ``GET /api/v1/exports/credit-usage/``: people only (a
personal token or a session; API keys record usage and cannot read it back). CSV is chosen
with ``?format=csv`` or ``Accept: text/csv``; JSON is the default. Errors are always JSON, in
the one error shape.
"""

import uuid
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import permissions, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import KeyPrincipal
from core.display import format_credits
from core.replica import reading_for_reports
from core.serializers import SUBSCRIPTION_ID, SubscriptionIdField, SubscriptionRefSerializer

from . import large_exports, selectors, tasks
from .catalogue import PLANS_WITH_TEAM_VIEWS, REPORTS, Column, Report
from .exports import (
    CREDIT_USAGE_COLUMNS,
    CSVRenderer,
    credit_usage_cells,
    credit_usage_table,
    csv_filename,
    csv_response,
    report_table,
)
from .timeframes import TIMEFRAME_PARAMETERS, TIMEFRAMES, InvalidTimeframe, resolve_timeframe

# --- Shared pieces -----------------------------------------------------------------------------


class IsPerson(permissions.IsAuthenticated):
    message = "Reports and exports are for people: use a personal token, not an API key."

    def has_permission(self, request, view) -> bool:
        return super().has_permission(request, view) and not isinstance(request.user, KeyPrincipal)


class ReportPagination(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


PAGING_PARAMETERS = ("page", "page_size", "format")


class CsvOrJsonApi(APIView):
    """Negotiates CSV or JSON; a bad ``format`` is a 400 and every error is JSON."""

    permission_classes = [IsPerson]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, CSVRenderer]

    def perform_content_negotiation(self, request, force=False):
        try:
            return super().perform_content_negotiation(request, force)
        except Http404:
            raise ValidationError({"format": ["Choose csv or json."]}) from None

    def finalize_response(self, request, response, *args, **kwargs):
        # CSV is only ever a streamed table. Anything else answered when CSV was asked for (an
        # error, the OPTIONS description, a queued large export) is JSON: a CSV file holding
        # an error message would be mistaken for data, and the CSV renderer only writes tables.
        if isinstance(response, Response) and isinstance(
            getattr(request, "accepted_renderer", None), CSVRenderer
        ):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    def wants_csv(self) -> bool:
        return isinstance(self.request.accepted_renderer, CSVRenderer)

    def dispatch(self, request, *args, **kwargs):
        # Report reads may go to a read replica (REPLICA_DATABASE_URL); writes never do.
        with reading_for_reports():
            return super().dispatch(request, *args, **kwargs)


class ParametersSerializer(serializers.Serializer):
    """Refuses query parameters it does not know (``allowed`` in the context), so that a typo
    in a filter's name is an error rather than an unfiltered report."""

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.context["allowed"]))
        if unknown:
            raise ValidationError({name: ["Unknown parameter."] for name in unknown})
        return attrs


@extend_schema_serializer(component_name="ApiError")
class ErrorSerializer(serializers.Serializer):
    error = inline_serializer(
        "ApiErrorBody",
        {
            "code": serializers.CharField(),
            "message": serializers.CharField(),
            "details": serializers.DictField(),
        },
    )


def error_responses(descriptions: dict[int, str]) -> dict:
    """Documents error responses, which are JSON whatever the format asked for."""
    return {
        (status, "application/json"): OpenApiResponse(ErrorSerializer, description=description)
        for status, description in descriptions.items()
    }


class TimeframeSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="A timeframe name, `period` or `custom`.")
    start = serializers.DateTimeField(help_text="First instant, included (UTC).")
    end = serializers.DateTimeField(help_text="Instant after the last, excluded (UTC).")
    first_day = serializers.DateField(help_text="First local day, included.")
    last_day = serializers.DateField(help_text="Last local day, included.")
    timezone = serializers.CharField(help_text="The subscription's time zone.")


SUBSCRIPTION_PARAMETER = OpenApiParameter(
    "subscription",
    SUBSCRIPTION_ID,
    description="Id of one of your subscriptions; by default your first top-level one.",
)
FORMAT_PARAMETER = OpenApiParameter(
    "format",
    OpenApiTypes.STR,
    enum=["json", "csv"],
    description="`csv` streams a file (as does `Accept: text/csv`); JSON is the default.",
)
PAGE_PARAMETERS = [
    OpenApiParameter("page", OpenApiTypes.INT, description="JSON page number, from 1."),
    OpenApiParameter(
        "page_size",
        OpenApiTypes.INT,
        description=f"JSON rows per page (default {ReportPagination.page_size}, "
        f"at most {ReportPagination.max_page_size}).",
    ),
]
COMMON_ERRORS = error_responses(
    {
        401: "Not authenticated.",
        403: "`permission_denied`: an API key, or a scope your role does not reach.",
        404: "`not_found`: not one of your subscriptions (or, for the export, an environment "
        "outside them: `unknown_environment`).",
    }
)


def _page(request, view, rows, *, results, subscription, timeframe, totals, **extra) -> Response:
    """A JSON page of ``rows``, formatted by ``results(page)``, with totals and timeframe."""
    paginator = ReportPagination()
    page = paginator.paginate_queryset(rows, request, view=view)
    return Response(
        {
            **extra,
            "subscription": SubscriptionRefSerializer(subscription).data,
            "timeframe": TimeframeSerializer(timeframe).data,
            "count": paginator.page.paginator.count,
            "next": paginator.get_next_link(),
            "previous": paginator.get_previous_link(),
            "totals": totals,
            "results": results(page),
        }
    )


def _page_serializer(
    name: str, results: serializers.Serializer, totals: serializers.Serializer, **extra
) -> serializers.Serializer:
    return inline_serializer(
        name,
        {
            **extra,
            "subscription": SubscriptionRefSerializer(),
            "timeframe": TimeframeSerializer(),
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "totals": totals,
            "results": results,
        },
    )


# --- Reports -----------------------------------------------------------------------------------


def _serializer_field(column: Column) -> serializers.Field:
    """The DRF field that documents a report column (the rows are written by the catalogue)."""
    options = {"help_text": column.description, "allow_null": column.nullable}
    if column.kind is Decimal and column.places is None:  # money: its currency's places
        return serializers.CharField(**options)
    if column.kind is Decimal:
        places = -column.places.as_tuple().exponent
        return serializers.DecimalField(None, places, coerce_to_string=True, **options)
    if column.kind is int:
        return serializers.IntegerField(**options)
    if column.kind is UUID:
        return serializers.UUIDField(**options)
    return serializers.CharField(**options)


def _columns_serializer(name: str, columns, **kwargs) -> serializers.Serializer:
    return inline_serializer(
        name, {column.name: _serializer_field(column) for column in columns}, **kwargs
    )


def _component(report: Report) -> str:
    return "".join(part.title() for part in report.slug.split("-"))


def _allowed_parameters(report: Report) -> list[str]:
    """The query parameters the report knows."""
    names = [*TIMEFRAME_PARAMETERS, *(spec.name for spec in report.filters), *PAGING_PARAMETERS]
    names += ["subscription", "ordering"]
    return [*names, "include_sub_accounts"] if report.sub_account_toggle else names


class ReportParametersSerializer(ParametersSerializer):
    subscription = SubscriptionIdField()
    include_sub_accounts = serializers.BooleanField(default=False)
    ordering = serializers.CharField(required=False)


class ReportApi(CsvOrJsonApi):
    report: Report

    def get(self, request):
        report = self.report
        parameters = ReportParametersSerializer(
            data=request.query_params, context={"allowed": _allowed_parameters(report)}
        )
        parameters.is_valid(raise_exception=True)
        options = parameters.validated_data
        subscription = selectors.report_subscription(
            user=request.user, subscription_id=options.get("subscription")
        )
        if empty := [n for n in TIMEFRAME_PARAMETERS if request.query_params.get(n) == ""]:
            # The schema says a date, a month or a name: ``start=`` is not read as absent.
            raise InvalidTimeframe("Give a value or leave the parameter out.", parameter=empty[0])
        timeframe = resolve_timeframe(subscription=subscription, params=request.query_params)
        rows = report.rows(
            user=request.user,
            subscription=subscription,
            timeframe=timeframe,
            filters=request.query_params,
            include_sub_accounts=options["include_sub_accounts"],
            ordering=options.get("ordering"),
        )
        filename = csv_filename(
            subscription=subscription, report=report.slug, timeframe_label=timeframe.label
        )
        if self.wants_csv():
            return csv_response(
                request.accepted_renderer, report_table(report, rows), filename=filename
            )
        totals = selectors.report_totals(rows=rows, row_class=report.row_type)
        response = _page(
            request,
            self,
            rows,
            results=lambda page: [
                dict(zip(report.column_names, report.cells(row), strict=True)) for row in page
            ],
            subscription=subscription,
            timeframe=timeframe,
            totals=report.total_cells(totals),
            report=report.slug,
        )
        # Shown in place, but saved (``curl -OJ``, the Reports page) under the CSV's name.
        json_name = filename.removesuffix(".csv") + ".json"
        response["Content-Disposition"] = f'inline; filename="{json_name}"'
        return response


FILTER_TYPES = {"integer": OpenApiTypes.INT, "email": OpenApiTypes.EMAIL, "text": OpenApiTypes.STR}


def _report_parameters(report: Report) -> list[OpenApiParameter]:
    filters = [
        OpenApiParameter(spec.name, FILTER_TYPES[spec.value], description=spec.description)
        for spec in report.filters
    ]
    if report.sub_account_toggle:
        filters.append(
            OpenApiParameter(
                "include_sub_accounts",
                OpenApiTypes.BOOL,
                description="Add the usage of the sub-accounts you can see.",
            )
        )
    return [
        OpenApiParameter(
            "timeframe",
            OpenApiTypes.STR,
            enum=list(TIMEFRAMES),
            description="Give exactly one of `timeframe`, `period`, or `start` with `end` "
            "(none or two of them: `400 invalid_timeframe`). Local days in the subscription's "
            "time zone; weeks start on Monday; `this_*` and `last_N_*` end today, included.",
        ),
        OpenApiParameter(
            "period",
            OpenApiTypes.STR,
            pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
            description="Instead of `timeframe`: a whole billing period, the current one or a "
            "past one, YYYY-MM (a later one: `400 invalid_timeframe`).",
        ),
        OpenApiParameter(
            "start",
            OpenApiTypes.DATE,
            description="Instead of `timeframe`: the first local day; needs `end`.",
        ),
        OpenApiParameter(
            "end",
            OpenApiTypes.DATE,
            description="With `start`: the last local day, included, at most 366 days after "
            "`start` and not before it.",
        ),
        SUBSCRIPTION_PARAMETER,
        *filters,
        OpenApiParameter(
            "ordering",
            OpenApiTypes.STR,
            description="Comma-separated columns, `-` for descending: "
            + ", ".join(f"`{name}`" for name in report.column_names)
            + ". Default: credits_consumed descending.",
        ),
        FORMAT_PARAMETER,
        *PAGE_PARAMETERS,
    ]


def _refusals(report: Report) -> dict:
    """The 403s of a report: those of every endpoint, and its plan."""
    if not report.per_member:
        return COMMON_ERRORS
    return {
        **COMMON_ERRORS,
        **error_responses(
            {
                403: "`permission_denied`: an API key, or a scope your role does not reach. "
                f"`plan_required`: {report.title.lower()} names each member, a feature of the "
                f"{PLANS_WITH_TEAM_VIEWS} plans.",
            }
        ),
    }


def _report_view(report: Report) -> type[ReportApi]:
    """A view class per report, so that each has its own columns in the schema."""
    component = _component(report)
    view = type(f"{component}Api", (ReportApi,), {"report": report})
    return extend_schema_view(
        get=extend_schema(
            tags=["reports"],
            operation_id=report.slug.replace("-", "_"),
            summary=report.title,
            description=(
                f"{report.description}\n\nColumns: "
                + ", ".join(f"`{name}`" for name in report.column_names)
                + ". Members get their own usage, project managers their environments', "
                "subscription admins their subscription's. CSV is streamed, with a header row "
                "even when empty; text cells a spreadsheet would run as a formula start with "
                "a single quote. JSON is paginated and carries totals and the resolved "
                "timeframe. Credits and ratios are exact decimal strings."
            ),
            parameters=_report_parameters(report),
            responses={
                (200, "application/json"): _page_serializer(
                    f"{component}Page",
                    _columns_serializer(f"{component}Row", report.columns, many=True),
                    _columns_serializer(
                        f"{component}Totals", [c for c in report.columns if c.total]
                    ),
                    report=serializers.CharField(),
                ),
                (200, "text/csv"): OpenApiResponse(
                    OpenApiTypes.STR, description="The same columns as a CSV file."
                ),
                **error_responses(
                    {
                        400: "`invalid_timeframe`: not exactly one of `timeframe`, "
                        "`period` or `start` with `end`, or one out of range (details list the "
                        "allowed values). `invalid_filter`: a filter names nothing you can see "
                        "(never an empty report). `invalid_ordering`: not the report's columns. "
                        "`validation_error`: an unknown or malformed parameter."
                    }
                ),
                **_refusals(report),
            },
        )
    )(view)


# For the URLs (``reports.api_urls``): one view per report of the catalogue.
REPORT_VIEWS = {report.slug: _report_view(report) for report in REPORTS}


# --- The credit usage export ---------------------------------------------------------------


class ExportParametersSerializer(ParametersSerializer):
    scope = serializers.CharField()
    environment = serializers.UUIDField(required=False)
    subscription = SubscriptionIdField()


class CreditUsageRowSerializer(serializers.Serializer):
    Timestamp = serializers.CharField(help_text="ISO 8601, UTC.")
    User = serializers.CharField(help_text="Email, or the API key's name if a key acted alone.")
    Environment = serializers.CharField(help_text="Project name / Environment name.")
    EnvironmentId = serializers.CharField(help_text="The environment's UUID.")
    Credits = serializers.CharField(help_text="Exact decimal, 4 places; adjustments can be < 0.")
    BaseCredits = serializers.CharField(help_text="Credits drawn from the base allocation.")
    GrantCredits = serializers.CharField(help_text="Credits drawn from grants.")
    ExcessCredits = serializers.CharField(help_text="Credits beyond the allocation.")
    Cost = serializers.CharField(
        help_text="What the row cost, rounded once to the currency's minor unit (half to "
        "even); empty without a price, or for readers who do not administer the subscription."
    )
    Currency = serializers.CharField(help_text="ISO 4217 code of Cost; empty without one.")


def _export_totals(export: selectors.CreditUsageExport) -> dict:
    credits, cost = export.totals()
    return {
        "Credits": format_credits(credits, grouped=False),
        "Cost": None if cost is None else f"{cost:f}",
        "Currency": export.currency if cost is not None else None,
    }


class CreditUsageExportApi(CsvOrJsonApi):
    @extend_schema(
        tags=["reports"],
        operation_id="credit_usage_export",
        summary="Export AI credit usage of the current billing period",
        description=(
            "One row per ledger event of the current billing period, as it stands now: "
            "`Timestamp,User,Environment,EnvironmentId,Credits,BaseCredits,GrantCredits,ExcessCredits,Cost,Currency`.\n\n"
            "* `scope=mine`: your own usage (in `environment`, or everywhere); anyone.\n"
            "* `scope=environment&environment=<EnvironmentId>`: everyone's usage there; its "
            "project managers and the subscription's admins.\n"
            "* `scope=subscription`: all usage; the subscription's admins. Its total equals "
            "the balance's `used`.\n\n"
            "Another role gets a 403; an environment of another subscription a 404."
        ),
        parameters=[
            OpenApiParameter(
                "scope", OpenApiTypes.STR, enum=list(selectors.EXPORT_SCOPES), required=True
            ),
            OpenApiParameter(
                "environment",
                OpenApiTypes.UUID,
                description="EnvironmentId; needed with `scope=environment`, optional with "
                "`scope=mine`.",
            ),
            SUBSCRIPTION_PARAMETER,
            FORMAT_PARAMETER,
            *PAGE_PARAMETERS,
        ],
        responses={
            (200, "application/json"): _page_serializer(
                "CreditUsagePage",
                CreditUsageRowSerializer(many=True),
                inline_serializer(
                    "CreditUsageTotals",
                    {
                        "Credits": serializers.CharField(),
                        "Cost": serializers.CharField(allow_null=True),
                        "Currency": serializers.CharField(allow_null=True),
                    },
                ),
                report=serializers.CharField(),
                scope=serializers.CharField(),
            ),
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="`Timestamp,User,Environment,EnvironmentId,Credits,BaseCredits,GrantCredits,ExcessCredits,Cost,Currency`",
            ),
            **error_responses(
                {
                    400: "`invalid_scope`: `scope=environment` without `environment`. "
                    "`validation_error`: an unknown or malformed parameter."
                }
            ),
            **COMMON_ERRORS,
        },
    )
    def get(self, request):
        parameters = ExportParametersSerializer(
            data=request.query_params,
            context={"allowed": ["scope", "environment", "subscription", *PAGING_PARAMETERS]},
        )
        parameters.is_valid(raise_exception=True)
        options = parameters.validated_data
        export = selectors.credit_usage_export(
            user=request.user,
            scope=options["scope"],
            subscription_id=options.get("subscription"),
            environment_id=options.get("environment"),
        )
        if self.wants_csv() and (rows := export.events.count()) > settings.LARGE_EXPORT_ROWS:
            return self._queue_large_export(request, export, options, rows=rows)
        if self.wants_csv():
            return csv_response(
                request.accepted_renderer,
                credit_usage_table(export),
                filename=csv_filename(
                    subscription=export.subscription,
                    report=f"credit-usage-{export.scope}",
                    timeframe_label=export.timeframe.label,
                ),
            )
        return _page(
            request,
            self,
            export.events,
            results=lambda page: [
                dict(
                    zip(CREDIT_USAGE_COLUMNS, credit_usage_cells(row, export.currency), strict=True)
                )
                for row in page
            ],
            subscription=export.subscription,
            timeframe=export.timeframe,
            totals=_export_totals(export),
            report="credit-usage",
            scope=export.scope,
        )

    def _queue_large_export(self, request, export, options, *, rows: int):
        """Too many rows to stream: a worker writes the file and emails a download link."""
        tasks.queue_large_export(
            large_exports.ExportRequest(
                user_id=request.user.pk,
                scope=export.scope,
                subscription_id=export.subscription.pk,
                environment_id=str(options["environment"]) if options.get("environment") else None,
                as_of=timezone.now().isoformat(),
                export_id=uuid.uuid4().hex,
            )
        )
        request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return Response(
            {
                "status": "queued",
                "rows": rows,
                "message": (
                    f"This export has {rows} rows, more than {settings.LARGE_EXPORT_ROWS} "
                    f"streamed at once: a download link will be emailed to {request.user.email}."
                ),
            },
            status=202,
        )
