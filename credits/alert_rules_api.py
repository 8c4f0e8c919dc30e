"""Alert rules over the API: ``/api/v1/alert-rules/`` and ``.../<id>/``.

Subscription admins manage every rule of their subscriptions; project managers their own rules
on the environments they manage, which notify by email only (``AlertRule.owner``). Anyone else
(members, API keys) gets a 403; a rule out of the caller's reach is a 404, as if it did not
exist. Validation is the model's (``AlertRule.clean``), shared with the admin and the
managers' pages; what the input names (teams, users, environments, endpoints) is looked up
through the scoping layer, so another subscription's is a 400 naming the field.
"""

import re

from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKey, Subscription, Team, User
from accounts.permissions import AdministersOrManages, environment_named, subscription_for_new
from core.detail_api import DetailApi, error_responses, saved
from core.money import CREDIT_DIGITS, CreditsField
from core.pagination import list_schema, paginated_response
from core.serializers import (
    EnvironmentRefSerializer,
    NamedInSubscriptionSerializer,
    NullableUUIDField,
    RefSerializer,
    StrictInputSerializer,
    UserRefSerializer,
)

from . import alert_rules
from .models import AlertRule, WebhookEndpoint

TAGS = ["alert rules"]
Target = AlertRule.Target
PERCENT = {"max_digits": 7, "decimal_places": 2}
MAX_ADDRESSES = 50


PERCENT_TEXT = "([0-9]{1,5}(\\.[0-9]{0,2})?|\\.[0-9]{1,2})"


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "pattern": f"^{PERCENT_TEXT}$"},
            {"type": "integer", "minimum": 0, "maximum": 99999},
        ],
        "example": 90,
    }
)
class PercentField(serializers.DecimalField):
    """A threshold in percent: a JSON number, or a string of ASCII digits with an optional "."
    and at most 2 decimals (what the schema says; Python's ``Decimal`` alone would also read
    "1_5" as 15, or " 5"); above 0 is the rule's to check."""

    default_error_messages = {
        "invalid": 'A percentage: a number, or digits with at most 2 decimals, e.g. "12.5".'
    }

    def __init__(self, **kwargs):
        super().__init__(**PERCENT, min_value=0, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str) and not re.fullmatch(PERCENT_TEXT, data):
            self.fail("invalid")
        return super().to_internal_value(data)


class MayKeepAlertRules(AdministersOrManages):
    message = "Alert rules are for subscription admins and project managers."


class ApiKeyRefSerializer(serializers.Serializer):
    prefix = serializers.CharField(help_text="The API key's id.")
    name = serializers.CharField()


@extend_schema_serializer(component_name="AlertRule")
class RuleOutputSerializer(NamedInSubscriptionSerializer):
    target = serializers.ChoiceField(choices=Target.choices)
    team = RefSerializer(allow_null=True)
    user = UserRefSerializer(allow_null=True)
    api_key = ApiKeyRefSerializer(allow_null=True)
    environment = EnvironmentRefSerializer(allow_null=True)
    budget = serializers.DecimalField(
        **CREDIT_DIGITS,
        allow_null=True,
        help_text="Environments: credits per period the thresholds are percentages of; null: "
        "the subscription's base allocation.",
    )
    thresholds = serializers.ListField(child=serializers.DecimalField(**PERCENT))
    email_admins = serializers.BooleanField()
    email_addresses = serializers.ListField(child=serializers.EmailField())
    webhook = RefSerializer(allow_null=True)
    slack = RefSerializer(allow_null=True)
    enabled = serializers.BooleanField()
    owner = serializers.EmailField(
        source="owner.email",
        allow_null=True,
        default=None,
        help_text="The project manager whose rule this is; null: the subscription admins'.",
    )
    created_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="AlertRule")
class RuleInputSerializer(StrictInputSerializer):
    fixed_fields = ("id", "owner", "created_at")

    subscription = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="On creation only. Default: the environment's subscription, else the first "
        "one you administer.",
    )
    name = serializers.CharField(max_length=100)
    target = serializers.ChoiceField(choices=Target.choices)
    team = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    user = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    api_key = serializers.CharField(
        max_length=64, required=False, allow_null=True, help_text="The API key's id (its prefix)."
    )
    environment = NullableUUIDField(
        required=False, allow_null=True, help_text="The EnvironmentId, for an environment rule."
    )
    budget = CreditsField(required=False, allow_null=True)
    thresholds = serializers.ListField(
        child=PercentField(),
        min_length=1,
        max_length=20,
        help_text="Percentages of the target, e.g. [50, 90, 100].",
    )
    email_admins = serializers.BooleanField(
        required=False, help_text="Default: true for admins' rules, false for managers'."
    )
    email_addresses = serializers.ListField(
        child=serializers.EmailField(), required=False, default=list, max_length=MAX_ADDRESSES
    )
    webhook = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    slack = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    enabled = serializers.BooleanField(default=True)


def _rules(request):
    return AlertRule.objects.visible_to(request.user).select_related(
        "subscription",
        "team",
        "user",
        "api_key",
        "environment__project",
        "webhook",
        "slack",
        "owner",
    )


def _one(request, field: str, queryset, pk):
    """The ``pk`` of ``queryset`` (already scoped), or a 400 naming ``field``."""
    if pk is None:
        return None
    found = queryset.filter(pk=pk).first()
    if found is None:
        raise ValidationError({field: [f"No {field} with this id in your subscriptions."]})
    return found


def _apply(request, rule: AlertRule, data: dict, *, partial: bool) -> None:
    """Copy the input onto ``rule``; on PUT (not ``partial``) an absent field is cleared."""
    for name in ("name", "target", "budget", "thresholds", "email_addresses", "enabled"):
        if name in data or not partial:
            setattr(rule, name, data.get(name))
    if "email_admins" in data:
        rule.email_admins = data["email_admins"]
    elif not partial:
        rule.email_admins = rule.owner_id is None
    user = request.user
    lookups = {
        "team": Team.objects.visible_to(user),
        "user": User.objects.visible_to(user),
        "webhook": WebhookEndpoint.objects.visible_to(user).filter(kind="webhook"),
        "slack": WebhookEndpoint.objects.visible_to(user).filter(kind="slack"),
    }
    for name, queryset in lookups.items():
        if name in data or not partial:
            setattr(rule, name, _one(request, name, queryset, data.get(name)))
    if "api_key" in data or not partial:
        rule.api_key = _api_key(request, data.get("api_key"))
    if "environment" in data or not partial:
        rule.environment = environment_named(request, data.get("environment"))


def _api_key(request, prefix: str | None) -> ApiKey | None:
    if prefix is None:
        return None
    found = ApiKey.objects.visible_to(request.user).filter(prefix=prefix).first()
    if found is None:
        raise ValidationError({"api_key": ["No API key with this id in your subscriptions."]})
    return found


ERRORS = error_responses(
    invalid="`validation_error`, with the fields: malformed input, something named "
    "that is not yours (a team, user, API key, environment or endpoint), or a rule between "
    "fields: a team rule names a team, a user rule a user, an API key rule a key with a "
    "budget, an environment rule an environment "
    "(and only it a budget); a project manager's rule watches an environment they manage "
    "and emails people of it only (no webhook, Slack or `email_admins`); a rule cannot "
    "move to another subscription.",
    forbidden="Not a subscription admin or project manager.",
    not_found="Not among the alert rules you keep.",
)


class AlertRuleListApi(APIView):
    permission_classes = [MayKeepAlertRules]

    @list_schema(
        RuleOutputSerializer,
        component_name="AlertRulePage",
        errors=ERRORS,
        tags=TAGS,
        operation_id="alert_rules_list",
        summary="List the alert rules you keep",
        description="Admins: every rule of their subscriptions. Project managers: their own "
        "rules on the environments they manage.",
    )
    def get(self, request):
        rules = _rules(request).order_by("subscription__name", "name", "pk")
        return paginated_response(
            results=rules, serializer_class=RuleOutputSerializer, request=request, view=self
        )

    @extend_schema(
        tags=TAGS,
        operation_id="alert_rules_create",
        summary="Add an alert rule",
        description="Each threshold crossed is told once per period, within about a minute. "
        "An admin's rule may watch the allocation, the excess allowance, a team's or a user's "
        "limit, an API key's budget or an environment, and tell the admins, other addresses, "
        "a webhook and a Slack endpoint. A project manager's rule watches an environment they "
        "manage and emails people of that environment (themselves included).",
        request=RuleInputSerializer,
        responses={201: RuleOutputSerializer, **ERRORS},
    )
    def post(self, request):
        serializer = RuleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        subscription = subscription_for_new(
            request,
            subscription_id=data.get("subscription"),
            environment=environment_named(request, data.get("environment")),
            refusal={"environment": ["Choose an environment you manage."]},
        )
        administers = (
            Subscription.objects.administered_by(request.user).filter(pk=subscription.pk).exists()
        )
        rule = AlertRule(subscription=subscription, owner=None if administers else request.user)
        _apply(request, rule, data, partial=False)
        saved(alert_rules.save_rule, rule=rule, actor=request.user)
        body = RuleOutputSerializer(_rules(request).get(pk=rule.pk)).data
        return Response(body, status=status.HTTP_201_CREATED)


class AlertRuleDetailApi(DetailApi):
    permission_classes = [MayKeepAlertRules]
    lookup_url_kwarg = "rule_id"
    input_serializer = RuleInputSerializer
    output_serializer = RuleOutputSerializer
    not_found = "No such alert rule among yours."
    moving_refused = "A rule cannot move to another one."
    documented = {
        "tags": TAGS,
        "operations": "alert_rules",
        "noun": "an alert rule",
        "errors": ERRORS,
        "deleted": "Delete an alert rule (and its crossings)",
    }

    def kept(self, request):
        return _rules(request)

    def apply(self, request, found, data, *, partial):
        _apply(request, found, data, partial=partial)

    def save(self, found, actor):
        return alert_rules.save_rule(rule=found, actor=actor)

    def delete_object(self, found, actor):
        alert_rules.delete_rule(rule=found, actor=actor)
