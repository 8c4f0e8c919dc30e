"""Amounts of credits: their digits, and reading them from people and API callers, strictly,
in one place.

Python's ``Decimal("1_5")`` is 15, and it reads Arabic-Indic or full-width digits, spaces and a
leading ``+`` too; a typo must never be charged. An amount is a JSON number, or a string of
ASCII digits with an optional ``.`` and at most 4 decimals (``"12"``, ``"0.5"``, ``"12.2500"``),
and nothing else. Credits, limits and allowances (and prices, when they come) all read it here:
``CreditsField`` in API serializers, ``CreditsFormField`` in the admin.
"""

import re
from decimal import ROUND_HALF_EVEN, Decimal

from babel.numbers import get_currency_precision, list_currencies
from django import forms
from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

# Every amount of credits (columns, API fields, form fields): 18 digits, 4 of them decimals.
CREDIT_DIGITS = {"max_digits": 18, "decimal_places": 4}
# The smallest amount of credits: what amounts are quantized to (0.0001).
CREDIT_PLACES = Decimal(1).scaleb(-CREDIT_DIGITS["decimal_places"])
# The first amount a column of credits cannot hold.
MAX_CREDITS = Decimal(10) ** (CREDIT_DIGITS["max_digits"] - CREDIT_DIGITS["decimal_places"])

_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]{1,4})?")
_SIGNED_AMOUNT = re.compile(r"-?[0-9]+(?:\.[0-9]{1,4})?")
AMOUNT_HELP = 'A JSON number, or a string of digits with up to 4 decimals after a ".", e.g. "12.5".'


def parse_credits(value, *, signed: bool = False) -> Decimal:
    """``value`` as an exact Decimal; ``ValueError`` for anything but an int, a finite
    ``Decimal`` (a JSON number as ``core.parsers`` reads it) or a strict amount string.
    ``signed`` also accepts a leading ``-`` (an adjustment that gives credits back).

    Range and number of decimal places of numbers are the caller's to check."""
    if isinstance(value, bool):
        raise ValueError("A boolean is not an amount.")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("Not a finite number.")
        return value
    if isinstance(value, str) and (_SIGNED_AMOUNT if signed else _AMOUNT).fullmatch(value):
        return Decimal(value)
    raise ValueError("Not an amount of credits.")


def is_storable_credits(value) -> bool:
    """Whether services may store ``value`` as a limit or budget: a finite ``Decimal`` from 0
    that a column of credits holds exactly (the API and the admin have parsed it already)."""
    return (
        isinstance(value, Decimal)
        and value.is_finite()
        and 0 <= value < MAX_CREDITS
        and value == value.quantize(CREDIT_PLACES)
    )


def _amount_schema(digits: dict, example: str) -> dict:
    """An amount in the schema (requests): a string of digits or an integer, within
    ``digits`` (``max_digits``, ``decimal_places``)."""
    places = digits["decimal_places"]
    whole = digits["max_digits"] - places
    return {
        "oneOf": [
            {
                "type": "string",
                "pattern": f"^[0-9]{{1,{whole}}}(\\.[0-9]{{1,{places}}})?$",
                "example": example,
            },
            {"type": "integer", "minimum": 0, "maximum": 10**whole - 1},
        ]
    }


def _with_digits(kwargs: dict, digits: dict) -> dict:
    """A DecimalField's arguments: ``digits`` and at least 0, unless ``kwargs`` say otherwise."""
    return {**digits, "min_value": Decimal(0), **kwargs}


# What ``parse_credits`` reads, within 18 digits.
CREDITS_SCHEMA = _amount_schema(CREDIT_DIGITS, "12.5")


@extend_schema_field(CREDITS_SCHEMA)
class CreditsField(serializers.DecimalField):
    """An amount of credits in the API: at least 0 unless ``min_value`` says otherwise, 18
    digits, 4 decimal places."""

    default_error_messages = {"invalid": f"Not an amount of credits. {AMOUNT_HELP}"}

    def __init__(self, **kwargs):
        super().__init__(**_with_digits(kwargs, CREDIT_DIGITS))

    def validate_empty_values(self, data):
        """A blank string is not an amount: DRF's ``DecimalField`` would read it as null."""
        if isinstance(data, str) and not data.strip():
            return serializers.Field.validate_empty_values(self, data)
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        try:
            amount = parse_credits(data)
        except ValueError:
            self.fail("invalid")
        return super().to_internal_value(amount)


class CreditsFormField(forms.DecimalField):
    """An amount of credits in the admin's forms; ``signed`` for adjustments."""

    default_error_messages = {
        "invalid": 'Enter digits with up to 4 decimals after a ".", e.g. 12.5.',
    }

    def __init__(self, *, signed: bool = False, **kwargs):
        self.signed = signed
        kwargs.setdefault("max_digits", CREDIT_DIGITS["max_digits"])
        kwargs.setdefault("decimal_places", CREDIT_DIGITS["decimal_places"])
        super().__init__(**kwargs)

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return parse_credits(value, signed=self.signed)
        except ValueError:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None


# Prices per credit: 6 decimal places (a credit may cost a fraction of a cent).
PRICE_DIGITS = {"max_digits": 18, "decimal_places": 6}
_PRICE = re.compile(r"[0-9]+(?:\.[0-9]{1,6})?")
PRICE_HELP = 'A JSON number, or a string of digits with up to 6 decimals after a ".", e.g. "0.02".'
PRICE_SCHEMA = _amount_schema(PRICE_DIGITS, "0.02")


@extend_schema_field(PRICE_SCHEMA)
class PriceField(serializers.DecimalField):
    """An amount of money in the API (a price, what a grant cost), read as strictly as credits:
    at least 0, at most 6 decimals (the currency's minor unit is the service's to check)."""

    default_error_messages = {"invalid": f"Not an amount of money. {PRICE_HELP}"}

    def __init__(self, **kwargs):
        super().__init__(**_with_digits(kwargs, PRICE_DIGITS))

    def to_internal_value(self, data):
        if isinstance(data, str) and not _PRICE.fullmatch(data):
            self.fail("invalid")
        try:
            amount = parse_credits(data) if not isinstance(data, str) else Decimal(data)
        except ValueError:
            self.fail("invalid")
        return super().to_internal_value(amount)


# An unrounded cost (credits x price per credit): every place of both, so that sums are exact
# and rounding happens once, per line, where money is shown.
COST_DIGITS = {"max_digits": 32, "decimal_places": 10}


def validate_currency(code: str) -> None:
    """An ISO 4217 code that Babel knows (``babel.numbers.list_currencies``), upper case."""
    if code not in list_currencies():
        raise ValidationError(f"{code!r} is not an ISO 4217 currency code.", code="currency")


def currency_places(currency: str) -> int:
    """The currency's minor unit in decimal places (EUR 2, JPY 0, BHD 3), from Babel."""
    return get_currency_precision(currency)


def line_amount(credits: Decimal, unit_price: Decimal, currency: str) -> Decimal:
    """One line's money: credits x unit price, rounded once to the currency's minor unit,
    half to even (the README's rounding rule). A total is the sum of its rounded lines."""
    return round_money(credits * unit_price, currency)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """An unrounded amount (a ledger cost, a sum of them) rounded once to the minor unit."""
    return amount.quantize(Decimal(1).scaleb(-currency_places(currency)), ROUND_HALF_EVEN)
