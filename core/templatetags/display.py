"""The display formats and design tokens for templates: ``{% load display %}``."""

from django import template

from core.display import design_tokens, format_credits, format_moment, format_money

register = template.Library()


credit_amount = register.filter("credit_amount", format_credits)


@register.filter
def moment(value, zone) -> str:
    """``{{ event.timestamp|moment:subscription.timezone }}`` -> ``5 Dec 2026, 15:45 CET``."""
    return format_moment(value, zone)


@register.filter
def money(value, currency) -> str:
    """``{{ line.amount|money:statement.currency }}`` -> ``EUR 1,234.50``; no amount -> a dash."""
    return format_money(value, currency)


@register.simple_tag
def tokens() -> dict[str, str]:
    """``{% tokens as t %}`` then ``style="color: {{ t.text }}"`` (emails' inline styles)."""
    return design_tokens()
