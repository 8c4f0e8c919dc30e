"""The base of every API input serializer: a field the API does not know is refused, never
ignored, so that a typo (``credit`` for ``credits``) or a field that cannot be written is
not mistaken for a change that took effect."""

from collections.abc import Mapping

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.settings import api_settings
from rest_framework.utils import html

# The schema of a subscription id parameter: ids start at 1, and 0 or less is refused.
SUBSCRIPTION_ID = {"type": "integer", "minimum": 1}


class StrictInputSerializer(serializers.Serializer):
    # Refuses unknown fields, checked on the data given (not in validate()) so that one
    # instance can validate many items, as a batch does. (A comment, not a docstring: the
    # schema would show it as every request body's description.)

    # Fields the resource has (they are in its output) that cannot be written here.
    fixed_fields: tuple[str, ...] = ()

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise ValidationError(
                    {
                        name: ["This field cannot be changed over the API."]
                        if name in self.fixed_fields
                        else ["Unknown field."]
                        for name in unknown
                    }
                )
        return super().to_internal_value(data)


class Prepared:
    """One serializer instance whose fields are built and bound once per process, for the
    request paths that validate or shape data on every call: DRF builds a serializer's fields
    anew for each instance, which costs more than the validation itself.

    ``validate`` gives what ``is_valid()`` and ``.errors`` would (the same details, so the
    same error shape), ``represent`` what ``.data`` would. Fields keep no state between calls,
    so threads may share one.
    """

    def __init__(self, serializer_class: type[serializers.BaseSerializer]):
        self.serializer = serializer_class()

    def validate(self, data) -> dict:
        try:
            return self.serializer.run_validation(data)
        except ValidationError as exc:
            detail = exc.detail
            if isinstance(detail, list) and len(detail) == 1 and detail[0].code == "null":
                # What ``Serializer.errors`` says when no data was given.
                no_data = ErrorDetail("No data provided", code="null")
                detail = {api_settings.NON_FIELD_ERRORS_KEY: [no_data]}
            raise ValidationError(detail) from None

    def represent(self, instance) -> dict:
        return self.serializer.to_representation(instance)


class RefusesEmptyFormValue:
    """A field of a form or query string whose empty value is refused like any other invalid
    one: DRF would read it as absent (or null), which the schema does not say."""

    def get_value(self, dictionary):
        if html.is_html_input(dictionary) and dictionary.get(self.field_name) == "":
            return ""
        return super().get_value(dictionary)


class NullableUUIDField(RefusesEmptyFormValue, serializers.UUIDField):
    """A UUID, or null where ``allow_null``; an empty form value is not a UUID."""


class SubscriptionIdField(RefusesEmptyFormValue, serializers.IntegerField):
    """``?subscription=<id>``, optional; the schema says an integer from 1, so an empty value
    is refused rather than read as absent (which picks a default subscription)."""

    def __init__(self, **kwargs):
        super().__init__(min_value=1, required=False, **kwargs)


# A reference or a head without a docstring: the schema would show it as the description of
# every subclass too (each module's subclass is its own component, named after its class).


class RefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class UserRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()


class SubscriptionRefSerializer(RefSerializer):
    """A subscription as the API's answers name it."""


class EnvironmentRefSerializer(serializers.Serializer):
    """An environment as the API's answers name it: its EnvironmentId and full name."""

    id = serializers.UUIDField(source="public_id", help_text="The EnvironmentId.")
    name = serializers.CharField(source="__str__", help_text="Project / Environment.")


class NamedInSubscriptionSerializer(serializers.Serializer):
    # The first fields of what a subscription names: an endpoint, a schedule, an alert rule.
    id = serializers.IntegerField()
    subscription = SubscriptionRefSerializer()
    name = serializers.CharField()
