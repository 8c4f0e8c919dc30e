"""JSON parsing that keeps credits exact and turns hostile input into a 4xx."""

import json
from decimal import Decimal

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.parsers import JSONParser

# The module, not the function: the middleware ``core.text_guard`` may be what first imports
# DRF's views, whose settings import this parser while text_guard is still being imported.
from core import text_guard


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The request body is too large."


class DecimalJSONParser(JSONParser):
    """Parse JSON numbers with a fraction as ``Decimal`` (``0.1`` stays 0.1, not a float).

    The body is read up to ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes and no further. Deeply nested
    documents make Python's parser recurse until it gives up: a 400 like any malformed body.
    Text holding a NUL character or an unpaired surrogate, in a value or a field name, is a 400
    naming where it was (``core.text_guard``), except inside the list named by a view's
    ``judged_one_by_one`` attribute, whose items the view refuses one at a time.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            document = json.loads(body.decode(encoding), parse_float=Decimal)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error: {exc}") from None
        view = (parser_context or {}).get("view")
        items = getattr(view, "judged_one_by_one", None)
        checked = document
        if items and isinstance(document, dict) and isinstance(document.get(items), list):
            checked = {**document, items: [None] * len(document[items])}
        found = text_guard.unstorable_in(checked)
        if found:
            raise ValidationError(found)
        return document
