"""Metering endpoints: record usage (one or a batch) and read the balance."""

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import KeyPrincipal
from accounts.models import Environment, Subscription, User
from core import metrics
from core.api_errors import STATUS_BY_CODE, error_body
from core.money import AMOUNT_HELP, CREDIT_DIGITS, CreditsField
from core.serializers import SUBSCRIPTION_ID, Prepared, StrictInputSerializer
from core.text_guard import unstorable_in

from . import errors
from .ledger_columns import AS_SENT
from .models import CreditEvent
from .periods import PLACEABLE_YEARS, is_placeable
from .recording import Recorded, Usage, record_batch, record_usage
from .selectors import balance

MAX_BATCH = 1000


def _errors(descriptions: dict[int, str]) -> dict[int, OpenApiResponse]:
    """Documents error responses: ``{"error": {"code", "message", "details"}}``."""
    return {code: OpenApiResponse(description=text) for code, text in descriptions.items()}


NOT_AUTHENTICATED = "Not authenticated."
BAD_BODY = "`validation_error` (the details name the fields) or `parse_error` (not JSON)."
TOO_LARGE = "`payload_too_large`: the body is larger than the server accepts."
RETRY = "`service_unavailable`: nothing was stored; retry with the same idempotency keys."
RECORD_ERRORS = _errors(
    {
        400: BAD_BODY,
        401: NOT_AUTHENTICATED,
        402: "`credit_limit_exceeded`, `user_limit_exceeded`, `team_limit_exceeded` or "
        "`api_key_budget_exceeded`.",
        403: "`permission_denied`: recording needs an API key.",
        404: "`unknown_environment`.",
        409: "`idempotency_conflict`: the key was used with another payload.",
        413: TOO_LARGE,
        422: "`product_not_enabled`, `not_a_member`, `unknown_agent`, `period_closed` or "
        "`timestamp_in_future`.",
        503: RETRY,
    }
)


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with an explicit offset; a naive timestamp is ambiguous and refused."""

    default_error_messages = {
        "naive": "Give the timestamp with a UTC offset, e.g. 2026-11-23T10:00:00Z.",
        "unplaceable": f"Give a timestamp in the years {PLACEABLE_YEARS} (UTC).",
    }

    def to_internal_value(self, value):
        try:
            parsed = parse_datetime(value) if isinstance(value, str) else None
        except ValueError:  # well formed but no such moment (30 February): the parent refuses it
            parsed = None
        if parsed is not None and parsed.tzinfo is None:
            self.fail("naive")
        instant = super().to_internal_value(value)
        if not is_placeable(instant):  # no billing period: refused, not "period closed"
            self.fail("unplaceable")
        return instant


class UsageInputSerializer(StrictInputSerializer):
    idempotency_key = serializers.CharField(max_length=200)
    timestamp = AwareDateTimeField(required=False, default_timezone=None)
    environment = serializers.UUIDField(help_text="EnvironmentId")
    user = serializers.EmailField(
        required=False, allow_null=True, help_text="Omit when the API key itself acts."
    )
    product = serializers.SlugField(max_length=50)
    feature = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    agent = serializers.CharField(
        max_length=200, required=False, allow_null=True, help_text="Agent id or name."
    )
    agent_type = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    model = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    credits = CreditsField(help_text=AMOUNT_HELP)
    input_tokens = serializers.IntegerField(min_value=0, max_value=2**62, default=0)
    output_tokens = serializers.IntegerField(min_value=0, max_value=2**62, default=0)
    latency_ms = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, required=False, allow_null=True
    )
    status = serializers.ChoiceField(
        choices=CreditEvent.Status.choices, default=CreditEvent.Status.SUCCEEDED
    )
    session_id = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class EventOutputSerializer(serializers.ModelSerializer):
    environment = serializers.UUIDField(source="environment.public_id", allow_null=True)
    user = serializers.CharField(source="actor_label")
    product = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    agent = serializers.CharField(source="agent.name", allow_null=True, default=None)

    class Meta:
        model = CreditEvent
        fields = [
            "id",
            "timestamp",
            "environment",
            "user",
            "product",
            "feature",
            "agent",
            "model",
            "credits",
            "excess_credits",
            "grant_credits",
            "cost",
            *AS_SENT,
        ]


class LimitStatusSerializer(serializers.Serializer):
    limit = serializers.DecimalField(**CREDIT_DIGITS, allow_null=True)
    used = serializers.DecimalField(**CREDIT_DIGITS)
    remaining = serializers.DecimalField(**CREDIT_DIGITS, allow_null=True)


class KeyBudgetStatusSerializer(LimitStatusSerializer):
    id = serializers.CharField(help_text="The API key's id (its prefix).")
    limit = serializers.DecimalField(**CREDIT_DIGITS, help_text="The key's budget per period.")
    remaining = serializers.DecimalField(**CREDIT_DIGITS)


class CreditTypesSerializer(serializers.Serializer):
    """The period's credits by type, in draw-down order: base, grants, excess."""

    base = inline_serializer(
        "BalanceBase",
        {
            "used": serializers.DecimalField(**CREDIT_DIGITS, source="base_used"),
            "remaining": serializers.DecimalField(**CREDIT_DIGITS, source="base_remaining"),
        },
        source="*",
    )
    grants = inline_serializer(
        "BalanceGrants",
        {
            "used": serializers.DecimalField(**CREDIT_DIGITS),
            "remaining": serializers.DecimalField(
                **CREDIT_DIGITS, help_text="Left in the grants active now."
            ),
            "expiring_soon": serializers.DecimalField(
                **CREDIT_DIGITS, help_text="Of the remaining, what expires within 7 days."
            ),
        },
    )
    excess = inline_serializer(
        "BalanceExcess",
        {
            "used": serializers.DecimalField(**CREDIT_DIGITS, source="excess_used"),
            "allowance": serializers.DecimalField(**CREDIT_DIGITS, source="excess_allowance"),
        },
        source="*",
    )


class BalanceSerializer(serializers.Serializer):
    subscription = inline_serializer(
        "BalanceSubscription",
        {"id": serializers.IntegerField(), "name": serializers.CharField()},
    )
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    next_reset = serializers.DateTimeField()
    days_until_reset = serializers.IntegerField()
    limit_mode = serializers.CharField()
    base_allocation = serializers.DecimalField(**CREDIT_DIGITS)
    used = serializers.DecimalField(**CREDIT_DIGITS)
    remaining = serializers.DecimalField(**CREDIT_DIGITS)
    excess_allowance = serializers.DecimalField(**CREDIT_DIGITS)
    excess_used = serializers.DecimalField(**CREDIT_DIGITS)
    excess_remaining = serializers.DecimalField(**CREDIT_DIGITS)
    utilisation_percent = serializers.DecimalField(max_digits=12, decimal_places=2)
    credit_types = CreditTypesSerializer(source="*")
    environment_used = serializers.DecimalField(**CREDIT_DIGITS, allow_null=True)
    user = LimitStatusSerializer(allow_null=True)
    team = LimitStatusSerializer(allow_null=True)
    api_key = KeyBudgetStatusSerializer(
        allow_null=True, help_text="The calling API key's budget; null when it has none."
    )


USAGE_INPUT = Prepared(UsageInputSerializer)
EVENT_OUTPUT = Prepared(EventOutputSerializer)
BALANCE_OUTPUT = Prepared(BalanceSerializer)


def _api_key(request):
    if not isinstance(request.user, KeyPrincipal):
        raise PermissionDenied("Recording usage needs an API key (Authorization: Api-Key ...).")
    return request.auth


def _balance_data(subscription, **kwargs) -> dict:
    return BALANCE_OUTPUT.represent(balance(subscription=subscription, **kwargs))


class RecordEventView(APIView):
    @extend_schema(
        request=UsageInputSerializer,
        responses={
            201: inline_serializer(
                "RecordedEvent", {"event": EventOutputSerializer(), "balance": BalanceSerializer()}
            ),
            200: inline_serializer(
                "ReplayedEvent", {"event": EventOutputSerializer(), "balance": BalanceSerializer()}
            ),
            **RECORD_ERRORS,
        },
        summary="Record one AI operation",
        description=(
            "Charges the subscription (and the user's and team's limits and the key's budget) "
            "atomically. "
            "Replaying an idempotency_key with the same payload returns the original event (200); "
            "with another payload it is a 409. Refusals: credit_limit_exceeded, "
            "user_limit_exceeded, team_limit_exceeded, api_key_budget_exceeded (402), "
            "unknown_environment (404), "
            "product_not_enabled, not_a_member, period_closed, timestamp_in_future (422)."
        ),
    )
    def post(self, request):
        api_key = _api_key(request)
        try:
            usage = Usage(**USAGE_INPUT.validate(request.data))
        except ValidationError:
            metrics.count_refusals(["validation_error"])
            raise
        recorded = record_usage(api_key=api_key, usage=usage)
        return Response(
            {
                "event": EVENT_OUTPUT.represent(recorded.event),
                "balance": _balance_data(api_key.subscription, api_key=api_key),
            },
            status=status.HTTP_201_CREATED if recorded.created else status.HTTP_200_OK,
        )


@extend_schema_serializer(component_name="EventBatch")
class BatchInputSerializer(StrictInputSerializer):
    # Any JSON value is taken as an event and judged on its own (an invalid one is refused in
    # ``results``, not the batch), so the schema promises no shape for the items.
    events = serializers.ListField(
        child=serializers.JSONField(
            allow_null=True,  # refused in ``results`` like any other event that is not an object
            encoder=DjangoJSONEncoder,  # checks each item; fractions are parsed as Decimal
            help_text="An event as for POST /api/v1/events/ (UsageInputRequest); an invalid "
            "one is refused in `results`, on its own.",
        ),
        min_length=1,
        max_length=MAX_BATCH,
    )


@extend_schema_serializer(component_name="BatchEventResult")
class BatchResultSerializer(serializers.Serializer):
    """One event's outcome, in the order the events were sent."""

    index = serializers.IntegerField(help_text="The event's position in `events`, from 0.")
    status = serializers.IntegerField(
        help_text="The HTTP status the event would have had alone: 201 recorded, 200 replayed, "
        "else its refusal's (400, 402, 404, 409, 422)."
    )
    event = EventOutputSerializer(required=False, help_text="When recorded or replayed.")
    error = inline_serializer(
        "BatchEventError",
        {
            "code": serializers.CharField(),
            "message": serializers.CharField(),
            "details": serializers.DictField(),
        },
        required=False,
        help_text="When refused: the error POST /api/v1/events/ would have answered.",
    )


class RecordBatchView(APIView):
    judged_one_by_one = "events"  # the parser leaves each event's text to the loop below

    @extend_schema(
        request=BatchInputSerializer,
        responses={
            200: inline_serializer(
                "BatchOutcome",
                {
                    "accepted": serializers.IntegerField(),
                    "refused": serializers.IntegerField(),
                    "results": BatchResultSerializer(many=True),
                    "balance": BalanceSerializer(),
                },
            ),
            **_errors(
                {
                    400: BAD_BODY + " Each event's own errors are in `results`, not here.",
                    401: NOT_AUTHENTICATED,
                    403: "`permission_denied`: recording needs an API key.",
                    413: TOO_LARGE,
                    503: RETRY,
                }
            ),
        },
        summary="Record up to 1,000 AI operations",
        description=(
            "Each event is accepted or refused on its own, in order; `results[i]` has the "
            "HTTP status the event would have had alone and either `event` or `error`."
        ),
    )
    def post(self, request):
        api_key = _api_key(request)
        batch = BatchInputSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        items = batch.validated_data["events"]
        results: list[dict | None] = [None] * len(items)
        valid: list[tuple[int, Usage]] = []
        validator = USAGE_INPUT.serializer
        for index, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise ValidationError("Each event must be a JSON object.")
                if unstorable := unstorable_in(item):
                    raise ValidationError(unstorable)
                valid.append((index, Usage(**validator.run_validation(item))))
            except ValidationError as exc:
                results[index] = _invalid(index, exc.detail)
        if len(valid) < len(items):
            metrics.count_refusals(["validation_error"] * (len(items) - len(valid)))
        outcomes = record_batch(api_key=api_key, usages=[usage for _, usage in valid])
        recorded = [(index, outcome) for (index, _), outcome in zip(valid, outcomes, strict=True)]
        for index, outcome in recorded:
            if isinstance(outcome, Recorded):
                status_code = 201 if outcome.created else 200
                event = EVENT_OUTPUT.represent(outcome.event)
                results[index] = {"index": index, "status": status_code, "event": event}
            else:
                results[index] = {
                    "index": index,
                    "status": STATUS_BY_CODE.get(outcome.code, 400),
                    **error_body(outcome.code, outcome.message, outcome.details),
                }
        accepted = sum(1 for result in results if result["status"] in (200, 201))
        return Response(
            {
                "accepted": accepted,
                "refused": len(results) - accepted,
                "results": results,
                "balance": _balance_data(api_key.subscription, api_key=api_key),
            }
        )


def _invalid(index: int, detail) -> dict:
    if isinstance(detail, list):  # not a JSON object at all
        return {"index": index, "status": 400, **error_body("validation_error", detail[0])}
    return {
        "index": index,
        "status": 400,
        **error_body("validation_error", "Some fields are invalid.", detail),
    }


class BalanceView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "subscription", SUBSCRIPTION_ID, description="For people in several subscriptions."
            ),
            OpenApiParameter(
                "environment", OpenApiTypes.UUID, description="EnvironmentId: adds its usage."
            ),
            OpenApiParameter("user", str, description="Email: that user's limits (keys, admins)."),
        ],
        responses={
            200: BalanceSerializer,
            **_errors(
                {
                    400: "`validation_error`: a malformed subscription id or EnvironmentId.",
                    401: NOT_AUTHENTICATED,
                    404: "`not_found` (subscription or user) or `unknown_environment`.",
                }
            ),
        },
        summary="Read the current period's balance",
    )
    def get(self, request):
        # A key reads its own subscription (and environment); ?subscription= is checked as
        # for people.
        subscription = _subscription_of(request)
        environments = Environment.objects.visible_to(request.user).filter(
            project__subscription=subscription
        )
        users = User.objects.visible_to(request.user)
        is_key = isinstance(request.user, KeyPrincipal)
        environment = _environment_param(request, environments)
        user = _user_param(request, users) or (None if is_key else request.user)
        return Response(
            _balance_data(
                subscription,
                environment=environment,
                user=user,
                api_key=request.auth if is_key else None,
            ),
        )


def _subscription_of(request) -> Subscription:
    subscriptions = Subscription.objects.visible_to(request.user)
    wanted = request.query_params.get("subscription")
    if wanted is not None:
        if not wanted.isascii() or not wanted.isdigit() or int(wanted) < 1:
            raise ValidationError({"subscription": ["A subscription id is a number from 1."]})
        subscriptions = subscriptions.filter(pk=int(wanted))
    subscription = subscriptions.order_by("pk").first()
    if subscription is None:
        raise NotFound("No such subscription.")
    return subscription


def _environment_param(request, environments) -> Environment | None:
    wanted = request.query_params.get("environment")
    if wanted is None:  # an empty value is not an EnvironmentId: refused below
        return None
    field = serializers.UUIDField()
    try:
        public_id = field.to_internal_value(wanted)
    except ValidationError:
        raise ValidationError({"environment": ["Give an EnvironmentId (a UUID)."]}) from None
    environment = environments.filter(public_id=public_id).first()
    if environment is None:
        raise errors.UnknownEnvironment(environment=wanted)
    return environment


def _user_param(request, users) -> User | None:
    wanted = request.query_params.get("user")
    if not wanted:
        return None
    user = users.filter(email__iexact=wanted).first()
    if user is None:
        raise NotFound("No such user in this subscription.")
    return user
