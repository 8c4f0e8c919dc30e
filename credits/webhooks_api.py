"""Webhook and Slack endpoints over the API, for subscription admins: ``/api/v1/webhooks/``.

The list and new endpoints act on the chosen subscription (``?subscription=<id>``, see
``accounts.permissions``); one endpoint, its delivery log and its actions are found by id among
the endpoints of the subscriptions the caller administers, anything else a 404. A signing
secret is in the answer twice only: when the endpoint is made and when it is rotated.
"""

from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    extend_schema_view,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from accounts.permissions import (
    ERRORS,
    ManagementView,
    administered_subscription,
    subscription_create_schema,
    subscription_list_schema,
)
from core.pagination import list_schema
from core.serializers import (
    NamedInSubscriptionSerializer,
    RefSerializer,
    StrictInputSerializer,
    SubscriptionRefSerializer,
)

from . import webhooks
from .models import AlertRule, WebhookDelivery, WebhookEndpoint

TAGS = ["webhooks"]
NOT_FOUND = OpenApiResponse(description="Not among the endpoints of subscriptions you administer.")
URL_REFUSED = {
    400: OpenApiResponse(
        description="`unsafe_webhook_url`: the URL is not http(s), its host does not resolve, "
        "or it resolves to an internal address outside `WEBHOOK_ALLOWED_NETWORKS`. "
        "`validation_error`: an unknown, read-only or malformed field."
    )
}


# --- The events' bodies, for the schema -------------------------------------------------------


class PeriodSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class RuleRefSerializer(RefSerializer):
    pass  # its own component in the schema


class TargetSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=AlertRule.Target.choices)
    id = serializers.IntegerField(required=False, help_text="Teams and users.")
    name = serializers.CharField(required=False, help_text="Teams, API keys and environments.")
    email = serializers.EmailField(required=False, help_text="Users.")
    prefix = serializers.CharField(required=False, help_text="API keys: the key's id.")
    environment_id = serializers.UUIDField(
        required=False, help_text="Environments: the EnvironmentId."
    )


def _event(component: str, types: list[str], data_fields: dict, description: str):
    """The envelope every event shares, with its ``data`` for these types."""
    data = type(f"{component}Data", (serializers.Serializer,), data_fields)
    fields = {
        "id": serializers.UUIDField(help_text="The idempotency id: the same in every attempt."),
        "type": serializers.ChoiceField(choices=types),
        "created": serializers.DateTimeField(),
        "subscription": SubscriptionRefSerializer(),
        "summary": serializers.CharField(help_text="One sentence for people."),
        "data": data(),
        "Meta": type("Meta", (), {"ref_name": component}),
    }
    serializer = type(component, (serializers.Serializer,), fields)
    serializer.__doc__ = description
    return extend_schema_serializer(component_name=component)(serializer)


def _decimal_string(help_text: str) -> serializers.CharField:
    return serializers.CharField(help_text=f"{help_text} A decimal as a string.")


ThresholdEvent = _event(
    "ThresholdEvent",
    ["threshold.crossed", "limit.reached"],
    {
        "target": TargetSerializer(),
        "threshold_percent": _decimal_string("The threshold crossed, in percent."),
        "credits_used": _decimal_string("Credits used in the period when it was crossed."),
        "credits_limit": _decimal_string("The target's credits per period."),
        "period": PeriodSerializer(),
        "rule": RuleRefSerializer(required=False, help_text="An alert rule's crossings only."),
    },
    "A threshold crossed: a built-in 80%/100% alert, or an alert rule's.",
)
PeriodOpenedEvent = _event(
    "PeriodOpenedEvent",
    ["period.opened"],
    {"period": PeriodSerializer(), "base_allocation": _decimal_string("Credits per period.")},
    "A new billing period opened: usage starts again from zero.",
)
StatementClosedEvent = _event(
    "StatementClosedEvent",
    ["statement.closed"],
    {
        "month": serializers.CharField(help_text="YYYY-MM, in the subscription's time zone."),
        "period": PeriodSerializer(),
        "closed_at": serializers.DateTimeField(
            help_text="When the period's grace window for late events ended."
        ),
        "currency": serializers.CharField(allow_null=True, help_text="ISO 4217; null: no price."),
        "total": serializers.CharField(
            allow_null=True, help_text="The statement's total. A decimal as a string."
        ),
        "url": serializers.URLField(help_text="The statement over the API (JSON or CSV)."),
    },
    "A period closed (its grace window ended): its statement will not change any more.",
)
ApiKeyRevokedEvent = _event(
    "ApiKeyRevokedEvent",
    ["api_key.revoked"],
    {
        "api_key": type(
            "RevokedKeySerializer",
            (serializers.Serializer,),
            {"prefix": serializers.CharField(), "name": serializers.CharField()},
        )(),
        "revoked_at": serializers.DateTimeField(),
    },
    "An API key was revoked: it records nothing any more.",
)
TestEvent = _event(
    "WebhookTestEvent", [webhooks.TEST_EVENT], {}, "Sent by the `test` action; data is empty."
)
EVENT_SCHEMA = PolymorphicProxySerializer(
    component_name="WebhookEvent",
    serializers=[
        ThresholdEvent,
        PeriodOpenedEvent,
        StatementClosedEvent,
        ApiKeyRevokedEvent,
        TestEvent,
    ],
    resource_type_field_name=None,
)


# --- Endpoints ----------------------------------------------------------------------------------

EVENT_TYPES_HELP = (
    "The events posted to the endpoint; empty: every event. The `webhook.test` event is "
    "always posted."
)


@extend_schema_serializer(component_name="WebhookEndpoint")
class EndpointOutputSerializer(NamedInSubscriptionSerializer):
    kind = serializers.ChoiceField(choices=WebhookEndpoint.Kind.choices)
    url = serializers.URLField()
    enabled = serializers.BooleanField()
    failing_since = serializers.DateTimeField(
        allow_null=True, help_text="Since when every attempt has failed."
    )
    disabled_at = serializers.DateTimeField(
        allow_null=True, help_text="When it was disabled for failing too long."
    )
    previous_secret_expires_at = serializers.DateTimeField(
        allow_null=True, help_text="After a rotation: until when the old secret signs too."
    )
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=webhooks.EVENT_TYPES), help_text=EVENT_TYPES_HELP
    )
    created_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="WebhookEndpointWithSecret")
class EndpointWithSecretSerializer(EndpointOutputSerializer):
    secret = serializers.CharField(
        allow_null=True,
        help_text="The signing secret, shown this once (null for Slack, which is not signed).",
    )


@extend_schema_serializer(component_name="WebhookEndpoint")
class EndpointInputSerializer(StrictInputSerializer):
    fixed_fields = (
        "id",
        "subscription",
        "failing_since",
        "disabled_at",
        "previous_secret_expires_at",
        "created_at",
    )

    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(
        choices=WebhookEndpoint.Kind.values,
        default=WebhookEndpoint.Kind.WEBHOOK,
        help_text="On creation only: `webhook` (signed JSON) or `slack` (an incoming webhook).",
    )
    url = serializers.URLField(max_length=2000)
    enabled = serializers.BooleanField(default=True)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=webhooks.EVENT_TYPES),
        default=list,
        max_length=len(webhooks.EVENT_TYPES) * 2,
        help_text=EVENT_TYPES_HELP,
    )


class SecretSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="The new signing secret, shown this once.")
    previous_secret_expires_at = serializers.DateTimeField(
        help_text="Until then the old secret signs each delivery too."
    )


class QueuedSerializer(serializers.Serializer):
    deliveries = serializers.ListField(
        child=serializers.IntegerField(), help_text="The deliveries queued, in the log."
    )


def _action(operation_id: str, summary: str, description: str, answer):
    """The schema of a POST action on one endpoint (no body)."""
    status_code = 200 if answer is SecretSerializer else 202
    return extend_schema(
        tags=TAGS,
        operation_id=operation_id,
        summary=summary,
        description=description,
        request=None,
        responses={status_code: answer, **ERRORS, 404: NOT_FOUND},
    )


def _no_store(response: Response) -> Response:
    response["Cache-Control"] = "no-store"  # a secret must not linger in caches
    return response


def _endpoints(request):
    return WebhookEndpoint.objects.visible_to(request.user).select_related("subscription")


def _endpoint(request, endpoint_id: int) -> WebhookEndpoint:
    endpoint = _endpoints(request).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("No such webhook endpoint among yours.")
    return endpoint


def _secret_response(endpoint: WebhookEndpoint, secret: str | None, status_code) -> Response:
    body = {**EndpointOutputSerializer(endpoint).data, "secret": secret}
    return _no_store(Response(body, status=status_code))


class WebhookListApi(ManagementView):
    @subscription_list_schema(
        EndpointOutputSerializer,
        component_name="WebhookEndpointPage",
        tags=TAGS,
        operation_id="webhooks_list",
        summary="List a subscription's webhook and Slack endpoints",
    )
    def get(self, request):
        subscription = administered_subscription(request)
        endpoints = _endpoints(request).filter(subscription=subscription).order_by("name", "pk")
        return self.page(endpoints, EndpointOutputSerializer)

    @subscription_create_schema(
        EndpointWithSecretSerializer,
        refusals=URL_REFUSED,
        tags=TAGS,
        operation_id="webhooks_create",
        summary="Add a webhook or Slack endpoint",
        description="The URL must be http(s) on the public internet (`WEBHOOK_ALLOWED_NETWORKS` "
        "can permit internal networks). The answer holds the signing secret, this once. The "
        "subscription's events of the chosen `event_types` (all when empty) are posted to the "
        "endpoint; the bodies are `WebhookEvent`.",
        request=EndpointInputSerializer,
    )
    def post(self, request):
        subscription = administered_subscription(request)
        serializer = EndpointInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        endpoint, secret = webhooks.create_endpoint(
            subscription=subscription,
            name=data["name"],
            url=data["url"],
            kind=data["kind"],
            event_types=data["event_types"],
        )
        if not data["enabled"]:
            webhooks.update_endpoint(endpoint=endpoint, enabled=False)
        signed = endpoint.kind == WebhookEndpoint.Kind.WEBHOOK
        return _secret_response(endpoint, secret if signed else None, status.HTTP_201_CREATED)


def _update_schema(partial: bool):
    return extend_schema(
        tags=TAGS,
        summary="Change some fields of an endpoint" if partial else "Replace an endpoint",
        description="Enabling a disabled endpoint forgets its failures; what it missed can be "
        "redelivered from its log. `kind` cannot change.",
        request=EndpointInputSerializer(partial=partial),
        responses={200: EndpointOutputSerializer, **ERRORS, **URL_REFUSED, 404: NOT_FOUND},
    )


@extend_schema_view(
    get=extend_schema(
        tags=TAGS,
        summary="An endpoint",
        responses={200: EndpointOutputSerializer, **ERRORS, 404: NOT_FOUND},
    ),
    put=_update_schema(partial=False),
    patch=_update_schema(partial=True),
    delete=extend_schema(
        tags=TAGS,
        summary="Delete an endpoint and its delivery log",
        responses={204: None, **ERRORS, 404: NOT_FOUND},
    ),
)
class WebhookDetailApi(ManagementView):
    def get(self, request, endpoint_id: int):
        return Response(EndpointOutputSerializer(_endpoint(request, endpoint_id)).data)

    def put(self, request, endpoint_id: int):
        return self._update(request, endpoint_id, partial=False)

    def patch(self, request, endpoint_id: int):
        return self._update(request, endpoint_id, partial=True)

    def _update(self, request, endpoint_id: int, *, partial: bool) -> Response:
        endpoint = _endpoint(request, endpoint_id)
        serializer = EndpointInputSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "kind" in request.data and data["kind"] != endpoint.kind:
            raise ValidationError({"kind": ["An endpoint's kind cannot change."]})
        webhooks.update_endpoint(
            endpoint=endpoint,
            name=data.get("name"),
            url=data.get("url"),
            enabled=data.get("enabled"),
            event_types=data.get("event_types"),
        )
        return Response(EndpointOutputSerializer(endpoint).data)

    def delete(self, request, endpoint_id: int):
        webhooks.delete_endpoint(endpoint=_endpoint(request, endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateApi(ManagementView):
    @_action(
        "webhooks_rotate",
        "Rotate an endpoint's signing secret",
        "The answer holds the new secret, this once; for `WEBHOOK_SECRET_GRACE_HOURS` each "
        "delivery is signed with the old one too.",
        SecretSerializer,
    )
    def post(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        if endpoint.kind != WebhookEndpoint.Kind.WEBHOOK:
            raise ValidationError({"kind": ["Slack endpoints are not signed: nothing to rotate."]})
        secret = webhooks.rotate_secret(endpoint=endpoint, now=timezone.now())
        body = SecretSerializer(
            {"secret": secret, "previous_secret_expires_at": endpoint.previous_secret_expires_at}
        ).data
        return _no_store(Response(body))


class WebhookTestApi(ManagementView):
    @_action(
        "webhooks_test",
        "Send a test event to an endpoint",
        "Posts a `webhook.test` event (`WebhookTestEvent`) to this endpoint alone.",
        QueuedSerializer,
    )
    def post(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        if not endpoint.enabled:
            raise ValidationError({"enabled": ["Enable the endpoint to send it a test event."]})
        ids = webhooks.send_test_event(endpoint=endpoint, now=timezone.now())
        return Response({"deliveries": ids}, status=status.HTTP_202_ACCEPTED)


# --- The delivery log -----------------------------------------------------------------------------


@extend_schema_field(EVENT_SCHEMA)
class EventField(serializers.JSONField):
    """The event as posted (Slack endpoints get it as a Block Kit message)."""


@extend_schema_serializer(component_name="WebhookDelivery")
class DeliveryOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    event_id = serializers.UUIDField()
    event_type = serializers.CharField()
    status = serializers.CharField(
        help_text="`pending` (being tried), `delivered`, or `failed` (retries ran out)."
    )
    attempts = serializers.IntegerField()
    response_code = serializers.IntegerField(
        allow_null=True, help_text="The last attempt's HTTP status; null: no answer."
    )
    error = serializers.CharField(help_text="What went wrong at the last attempt.")
    created_at = serializers.DateTimeField()
    last_attempt_at = serializers.DateTimeField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(help_text="Pending deliveries: the next try.")
    delivered_at = serializers.DateTimeField(allow_null=True)
    payload = EventField()


class WebhookDeliveryListApi(ManagementView):
    @list_schema(
        DeliveryOutputSerializer,
        component_name="WebhookDeliveryPage",
        errors={**ERRORS, 404: NOT_FOUND},
        tags=TAGS,
        operation_id="webhooks_deliveries_list",
        summary="An endpoint's delivery log, newest first",
    )
    def get(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        deliveries = (
            WebhookDelivery.objects.visible_to(request.user)
            .filter(endpoint=endpoint)
            .order_by("-created_at", "-pk")
        )
        return self.page(deliveries, DeliveryOutputSerializer)


class WebhookRedeliverApi(ManagementView):
    @_action(
        "webhooks_deliveries_redeliver",
        "Deliver an event again now",
        "Delivered or not, with the same event id and a fresh 24 hours of retries.",
        QueuedSerializer,
    )
    def post(self, request, endpoint_id: int, delivery_id: int):
        endpoint = _endpoint(request, endpoint_id)
        deliveries = WebhookDelivery.objects.visible_to(request.user).filter(
            endpoint=endpoint, pk=delivery_id
        )
        if not deliveries.exists():
            raise NotFound("No such delivery in this endpoint's log.")
        ids = webhooks.redeliver(deliveries=deliveries, now=timezone.now())
        return Response({"deliveries": ids}, status=status.HTTP_202_ACCEPTED)
