"""Report schedules over the API: ``/api/v1/report-schedules/`` and ``.../<id>/``.

Subscription admins manage the schedules of their subscriptions; project managers their own
schedules on the environments they manage. Anyone else (members, API keys) gets a 403; a
schedule out of the caller's reach is a 404, as if it did not exist. Validation is the model's
(``ReportSchedule.clean``), shared with the admin.
"""

from datetime import time

from django.utils import timezone
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import AdministersOrManages, environment_named, subscription_for_new
from core.detail_api import DetailApi, error_responses, saved
from core.pagination import page_of
from core.serializers import (
    EnvironmentRefSerializer,
    NamedInSubscriptionSerializer,
    NullableUUIDField,
    StrictInputSerializer,
)

from . import services
from .catalogue import ATTACHMENT_NAMES
from .models import MAX_RECIPIENTS, ReportSchedule, Weekday
from .schedules import next_due

WEEKDAYS = [label.lower() for label in Weekday.labels]


class CanScheduleReports(AdministersOrManages):
    message = "Report schedules are for subscription admins and project managers."


@extend_schema_field(
    {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$", "example": "08:00"}
)
class LocalTimeField(serializers.TimeField):
    """A wall-clock time as people write it, ``HH:MM`` (seconds are accepted and dropped)."""

    def __init__(self, **kwargs):
        super().__init__(format="%H:%M", input_formats=["%H:%M", "%H:%M:%S"], **kwargs)

    def to_internal_value(self, value):
        return super().to_internal_value(value).replace(second=0, microsecond=0)


@extend_schema_serializer(component_name="ReportSchedule")
class ScheduleOutputSerializer(NamedInSubscriptionSerializer):
    frequency = serializers.ChoiceField(choices=ReportSchedule.Frequency.choices)
    weekday = serializers.SerializerMethodField(help_text="Weekly reports: the day sent.")
    send_time = LocalTimeField(help_text="Local time, in the subscription's time zone.")
    timezone = serializers.CharField(source="subscription.timezone")
    recipients = serializers.ListField(child=serializers.EmailField())
    unsubscribed = serializers.SerializerMethodField(
        help_text="Recipients who unsubscribed: their reports are no longer sent."
    )
    scope = serializers.ChoiceField(choices=ReportSchedule.Scope.choices)
    environment = EnvironmentRefSerializer(allow_null=True)
    attached_reports = serializers.ListField(child=serializers.CharField())
    enabled = serializers.BooleanField()
    owner = serializers.EmailField(source="created_by.email", allow_null=True, default=None)
    next_report_at = serializers.SerializerMethodField(help_text="UTC; empty when paused.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_weekday(self, schedule) -> str:
        return WEEKDAYS[schedule.weekday]

    def get_unsubscribed(self, schedule) -> list[str]:
        return sorted(unsubscribe.email for unsubscribe in schedule.unsubscribes.all())

    def get_next_report_at(self, schedule) -> str | None:
        if not schedule.enabled:
            return None
        when = next_due(
            frequency=schedule.frequency,
            weekday=schedule.weekday,
            send_time=schedule.send_time,
            zone=schedule.subscription.zone,
            now=timezone.now(),
        )
        return serializers.DateTimeField().to_representation(when)


@extend_schema_serializer(component_name="ReportSchedule")
class ScheduleInputSerializer(StrictInputSerializer):
    subscription = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="On creation only. Default: the environment's subscription, else the first "
        "one you administer.",
    )
    name = serializers.CharField(max_length=200)
    frequency = serializers.ChoiceField(choices=ReportSchedule.Frequency.values, default="weekly")
    weekday = serializers.ChoiceField(choices=WEEKDAYS, default="monday")
    send_time = LocalTimeField(
        default=time(8, 0), help_text="HH:MM, in the subscription's time zone."
    )
    recipients = serializers.ListField(
        child=serializers.CharField(max_length=254),
        min_length=1,
        error_messages={"min_length": "Add at least one recipient."},
        max_length=MAX_RECIPIENTS * 2,  # duplicates are removed before the real limit applies
        help_text=f"Email addresses, members or not; at most {MAX_RECIPIENTS}, duplicates "
        "removed, case-insensitive.",
    )
    scope = serializers.ChoiceField(choices=ReportSchedule.Scope.values, default="subscription")
    environment = NullableUUIDField(
        required=False, allow_null=True, help_text="EnvironmentId, for the environment scope."
    )
    attached_reports = serializers.ListField(
        child=serializers.ChoiceField(choices=ATTACHMENT_NAMES), required=False, default=list
    )
    enabled = serializers.BooleanField(default=True)


def _schedules(request):
    return (
        ReportSchedule.objects.visible_to(request.user)
        .select_related("subscription", "environment__project", "created_by")
        .prefetch_related("unsubscribes")
    )


def _apply(schedule: ReportSchedule, data: dict) -> None:
    for name in ("name", "frequency", "send_time", "recipients", "scope", "enabled"):
        if name in data:
            setattr(schedule, name, data[name])
    if "weekday" in data:
        schedule.weekday = WEEKDAYS.index(data["weekday"])
    if "attached_reports" in data:
        schedule.attached_reports = data["attached_reports"]


def _output(request, schedule_id: int, *, status_code=status.HTTP_200_OK) -> Response:
    schedule = _schedules(request).get(pk=schedule_id)
    return Response(ScheduleOutputSerializer(schedule).data, status=status_code)


ERRORS = error_responses(
    invalid="`validation_error`, with the fields: malformed input, or a rule between "
    "fields: the `environment` scope needs an `environment` of yours, the credit usage "
    "export attaches to monthly reports only, recipients are email addresses (at most "
    f"{MAX_RECIPIENTS}), and a schedule cannot move to another subscription.",
    forbidden="Not a subscription admin or project manager.",
    not_found="Not among the schedules you manage.",
)


class ReportScheduleListApi(APIView):
    permission_classes = [CanScheduleReports]

    @extend_schema(
        tags=["report schedules"],
        operation_id="report_schedules_list",
        summary="List the report schedules you manage",
        responses={
            200: page_of(ScheduleOutputSerializer, component_name="ReportSchedulePage"),
            **ERRORS,
        },
    )
    def get(self, request):
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(
            _schedules(request).order_by("subscription__name", "name", "pk"), request, view=self
        )
        return paginator.get_paginated_response(ScheduleOutputSerializer(page, many=True).data)

    @extend_schema(
        tags=["report schedules"],
        operation_id="report_schedules_create",
        summary="Schedule a weekly or monthly usage report",
        description="The report shows what you may see: subscription admins can report on "
        "their subscription (with its sub-accounts or not) or one of its environments; "
        "project managers on an environment they manage. The credit usage export can be "
        f"attached to monthly reports. Attachable reports: {', '.join(ATTACHMENT_NAMES)}.",
        request=ScheduleInputSerializer,
        responses={201: ScheduleOutputSerializer, **ERRORS},
    )
    def post(self, request):
        serializer = ScheduleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        environment = environment_named(request, data.get("environment"))
        schedule = ReportSchedule(
            subscription=subscription_for_new(
                request,
                subscription_id=data.get("subscription"),
                environment=environment,
                refusal={"subscription": ["Choose the environment to report on."]},
            ),
            environment=environment,
            created_by=request.user,
        )
        _apply(schedule, data)
        schedule = saved(services.save_schedule, schedule=schedule, actor=request.user)
        return _output(request, schedule.pk, status_code=status.HTTP_201_CREATED)


class ReportScheduleDetailApi(DetailApi):
    permission_classes = [CanScheduleReports]
    lookup_url_kwarg = "schedule_id"
    input_serializer = ScheduleInputSerializer
    output_serializer = ScheduleOutputSerializer
    not_found = "No such report schedule among yours."
    moving_refused = "A schedule cannot move to another one."
    documented = {
        "tags": ["report schedules"],
        "operations": "report_schedules",
        "noun": "a report schedule",
        "errors": ERRORS,
        "deleted": "Delete a report schedule (and its delivery log)",
    }

    def kept(self, request):
        return _schedules(request)

    def apply(self, request, found, data, *, partial):
        if "environment" in data or not partial:
            found.environment = environment_named(request, data.get("environment"))
        _apply(found, data)

    def save(self, found, actor):
        return services.save_schedule(schedule=found, actor=actor)

    def delete_object(self, found, actor):
        services.delete_schedule(schedule=found, actor=actor)
