"""Per-user and per-team credit limits, managed by subscription admins over the API.

``/limits/users/<user_id>/`` and ``/limits/teams/<team_id>/`` are the limit of one user or
team in the chosen subscription (``?subscription=<id>``, see ``accounts.permissions``): GET
reads it, PUT sets it, DELETE lifts it. Users and teams outside that subscription are a 404.
"""

from collections.abc import Callable

from django.db.models import F
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    extend_schema_view,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from accounts.models import Membership, Team, User
from accounts.permissions import (
    ERRORS,
    SUBSCRIPTION_PARAMETER,
    ManagementView,
    administered_subscription,
    subscription_list_schema,
)
from core.money import AMOUNT_HELP, CREDIT_DIGITS, CreditsField
from core.serializers import RefSerializer, StrictInputSerializer, UserRefSerializer

from .limits import limits_with_usage, remove_limit, set_team_limit, set_user_limit
from .models import CreditLimit


# Their own components in the schema.
class LimitUserSerializer(UserRefSerializer):
    pass


class LimitTeamSerializer(RefSerializer):
    pass


@extend_schema_serializer(component_name="CreditLimit")
class LimitOutputSerializer(serializers.Serializer):
    kind = serializers.SerializerMethodField()
    user = LimitUserSerializer(allow_null=True)
    team = LimitTeamSerializer(allow_null=True)
    credits = serializers.DecimalField(**CREDIT_DIGITS, help_text="Credits allowed per period.")
    credits_used = serializers.DecimalField(
        **CREDIT_DIGITS, help_text="Used in the current period."
    )
    remaining = serializers.DecimalField(
        **CREDIT_DIGITS, help_text="Left in the current period (0 when the limit is below usage)."
    )
    updated_at = serializers.DateTimeField()

    @extend_schema_field({"type": "string", "enum": ["user", "team"]})
    def get_kind(self, limit) -> str:
        return "user" if limit.user_id else "team"


@extend_schema_serializer(component_name="CreditLimit")
class LimitInputSerializer(StrictInputSerializer):
    credits = CreditsField(help_text=f"Credits per billing period. {AMOUNT_HELP}")


def _limit_response(limit: CreditLimit, *, subscription) -> Response:
    limit = limits_with_usage(
        limits=CreditLimit.objects.filter(pk=limit.pk),
        subscription=subscription,
        now=timezone.now(),
    ).get()
    return Response(LimitOutputSerializer(limit).data)


def _existing_limit(request, *, subscription, **owner) -> CreditLimit:
    limit = (
        CreditLimit.objects.visible_to(request.user)
        .filter(subscription=subscription, **owner)
        .first()
    )
    if limit is None:
        raise NotFound("No limit is set here.")
    return limit


LIMIT_RESPONSES = {200: LimitOutputSerializer, **ERRORS}
NO_LIMIT = OpenApiResponse(description="Unknown user or team, or no limit set.")


class LimitListApi(ManagementView):
    @subscription_list_schema(
        LimitOutputSerializer,
        component_name="CreditLimitPage",
        tags=["limits"],
        summary="List the per-user and per-team limits",
    )
    def get(self, request):
        subscription = administered_subscription(request)
        limits = limits_with_usage(
            limits=CreditLimit.objects.visible_to(request.user),
            subscription=subscription,
            now=timezone.now(),
        ).order_by(F("team_id").asc(nulls_first=True), "user__email", "team__name")
        return self.page(limits, LimitOutputSerializer)


def _owner_limit_schemas(owner: str) -> dict:
    """The OpenAPI operations of one owner's (a user's or a team's) limit."""
    return {
        "get": extend_schema(
            tags=["limits"],
            summary=f"A {owner}'s limit",
            parameters=[SUBSCRIPTION_PARAMETER],
            responses={**LIMIT_RESPONSES, 404: NO_LIMIT},
        ),
        "put": extend_schema(
            tags=["limits"],
            summary=f"Set a {owner}'s limit",
            description="Applies at once to the usage already recorded in the current period: "
            f"a limit below it blocks the {owner}'s further use until the period resets.",
            parameters=[SUBSCRIPTION_PARAMETER],
            request=LimitInputSerializer,
            responses=LIMIT_RESPONSES,
        ),
        "delete": extend_schema(
            tags=["limits"],
            summary=f"Remove a {owner}'s limit",
            parameters=[SUBSCRIPTION_PARAMETER],
            responses={204: None, **ERRORS, 404: NO_LIMIT},
        ),
    }


# The limit of one user or team: the two differ only in how the owner is found and how its
# limit is set. (A comment, not a docstring: the schema would show it as each operation's text.)
class OwnerLimitApi(ManagementView):
    owner: str  # "user" or "team": the URL's ``<owner>_id`` and the limit's owner field
    set_owner_limit: Callable[..., CreditLimit]  # the service, taking the owner by that name
    # and ``find_owner(request, subscription, owner_id)``: the owner, or a 404

    def _owner(self, request, subscription) -> User | Team:
        return self.find_owner(request, subscription, self.kwargs[f"{self.owner}_id"])

    def get(self, request, **kwargs):
        subscription = administered_subscription(request)
        owner = self._owner(request, subscription)
        limit = _existing_limit(request, subscription=subscription, **{self.owner: owner})
        return _limit_response(limit, subscription=subscription)

    def put(self, request, **kwargs):
        subscription = administered_subscription(request)
        owner = self._owner(request, subscription)
        serializer = LimitInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        limit = self.set_owner_limit(
            subscription=subscription,
            **{self.owner: owner},
            credits=serializer.validated_data["credits"],
            actor=request.user,
        )
        return _limit_response(limit, subscription=subscription)

    def delete(self, request, **kwargs):
        subscription = administered_subscription(request)
        owner = self._owner(request, subscription)
        limit = _existing_limit(request, subscription=subscription, **{self.owner: owner})
        remove_limit(limit=limit, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(**_owner_limit_schemas("user"))
class UserLimitApi(OwnerLimitApi):
    owner = "user"
    set_owner_limit = staticmethod(set_user_limit)

    def find_owner(self, request, subscription, owner_id: int) -> User:
        members = (
            Membership.objects.visible_to(request.user)
            .filter(subscription=subscription)
            .values("user_id")
        )
        return get_object_or_404(
            User.objects.visible_to(request.user).filter(pk__in=members), pk=owner_id
        )


@extend_schema_view(**_owner_limit_schemas("team"))
class TeamLimitApi(OwnerLimitApi):
    owner = "team"
    set_owner_limit = staticmethod(set_team_limit)

    def find_owner(self, request, subscription, owner_id: int) -> Team:
        return get_object_or_404(
            Team.objects.visible_to(request.user).filter(subscription=subscription), pk=owner_id
        )
