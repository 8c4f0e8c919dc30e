"""How Creditdesk shows an amount, a moment and itself, in the admin, the pages and the emails.

One credit format (four decimal places, always, so that columns line up; thousands
separated for people, not for machines: CSV and JSON), one money format (an amount already
rounded to its currency's minor unit, with the currency code), one moment format (the subscription's
local time with the zone named), and one set of design tokens, read from the stylesheet that
the admin and the pages link, so that the emails' inline styles use the same values.
"""

import re
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from core.money import CREDIT_PLACES

TOKENS_CSS = Path(__file__).resolve().parent / "static" / "creditdesk" / "tokens.css"
_TOKEN = re.compile(r"--cd-([a-z0-9-]+)\s*:\s*([^;]+);")


def format_credits(value, *, grouped: bool = True) -> str:
    """``Decimal("9605.75")`` -> ``"9,605.7500"``, or ``"9605.7500"`` not ``grouped`` (the
    exports' machine format); no value -> a dash."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value).quantize(CREDIT_PLACES)
    if not grouped:
        return f"{amount:f}"
    return f"{amount if amount else abs(amount):,.4f}"


def format_money(amount: Decimal | None, currency: str | None) -> str:
    """``(Decimal("1234.50"), "EUR")`` -> ``"EUR 1,234.50"``: the places the amount was rounded
    to (its currency's minor unit), thousands separated; no amount or currency (no price) -> a
    dash, never a zero that looks like a price."""
    if amount is None or not currency:
        return "—"
    places = max(-amount.as_tuple().exponent, 0)
    return f"{currency} {amount if amount else abs(amount):,.{places}f}"


def format_moment(moment: datetime | None, zone: ZoneInfo | str) -> str:
    """An aware datetime in ``zone``: ``"5 Dec 2026, 15:45 CET"``."""
    if moment is None:
        return "—"
    zone = ZoneInfo(zone) if isinstance(zone, str) else zone
    local = moment.astimezone(zone)
    return f"{local.day} {local:%b %Y, %H:%M} {local.tzname()}"


@cache
def design_tokens() -> dict[str, str]:
    """``{"brand": "#1d4ed8", "font": "system-ui, ...", ...}`` from ``tokens.css``; the keys
    use underscores (``brand_soft``) so that templates can read them."""
    text = TOKENS_CSS.read_text()
    return {name.replace("-", "_"): value.strip() for name, value in _TOKEN.findall(text)}
