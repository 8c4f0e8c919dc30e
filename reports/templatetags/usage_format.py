"""How the usage pages write credits and percentages: exact, thousands separated, four places."""

from decimal import ROUND_HALF_UP, Decimal

from django import template

from core.display import format_credits

register = template.Library()

PERCENT_PLACES = Decimal("0.1")


# The one credit format, under the name the usage templates use.
credits = register.filter("credits", format_credits)


@register.filter
def signed_credits(value) -> str:
    if value is None:
        return "—"
    return f"+{credits(value)}" if value > 0 else credits(value)


@register.filter
def percent(value) -> str:
    """``Decimal("42.50")`` -> ``"42.5%"``; no value (nothing to compare with) -> a dash."""
    if value is None:
        return "—"
    rounded = Decimal(value).quantize(PERCENT_PLACES, rounding=ROUND_HALF_UP)
    text = f"{rounded:,.1f}".removesuffix(".0")
    return f"{text}%"


@register.filter
def signed_percent(value) -> str:
    if value is None:
        return "—"
    return f"+{percent(value)}" if value > 0 else percent(value)
