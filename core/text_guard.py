"""Text that cannot be stored or echoed is refused at the door, in one place.

PostgreSQL refuses a NUL character in text, and a lone UTF-16 surrogate (``"\\ud800"`` in
JSON) cannot be encoded as UTF-8 at all, so an error message that repeats it cannot be sent.
Neither is ever meaningful input. ``RefuseUnstorableText`` checks what every view reads before
any of them runs (the path, query parameters, form fields and headers); the JSON parser checks
each document (``core.parsers``); a batch checks each of its events on its own.

The refusal is a 400 that names where the text was and never repeats it.
"""

import contextlib
import re
from collections.abc import Iterable

from django.core.exceptions import BadRequest, SuspiciousOperation
from django.http import HttpResponseBadRequest, JsonResponse
from django.urls import reverse

from core.api_errors import error_body

# NUL, or a surrogate code point (only ever unpaired in a Python str).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MESSAGE = "Text may not contain NUL characters or unpaired surrogates."
FIELD_NAME_MESSAGE = "A field name contains a NUL character or an unpaired surrogate."


def is_unstorable(text: str) -> bool:
    return UNSTORABLE.search(text) is not None


def unstorable_in(document) -> dict[str, list[str]]:
    """``{where: [message]}`` for the first unstorable text in a parsed JSON document (field
    names included), or ``{}``. ``where`` is a path such as ``events[3].status``. Iterative:
    a document nested as deep as the JSON parser allows must not exhaust the stack."""
    pending = [("", document)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if is_unstorable(value):
                return {path or "non_field_errors": [MESSAGE]}
        elif isinstance(value, dict):
            for key in value:
                if isinstance(key, str) and is_unstorable(key):
                    return {path or "non_field_errors": [FIELD_NAME_MESSAGE]}
            pending.extend(
                (f"{path}.{key}" if path else str(key), item)
                for key, item in reversed(value.items())
            )
        elif isinstance(value, list):
            pending.extend(
                (f"{path}[{index}]", item) for index, item in reversed(list(enumerate(value)))
            )
    return {}


def _unstorable_parameter(pairs: Iterable[tuple[str, list[str]]]) -> dict[str, list[str]]:
    for name, values in pairs:
        if is_unstorable(name):
            return {"non_field_errors": [FIELD_NAME_MESSAGE]}
        if any(is_unstorable(value) for value in values):
            return {name: [MESSAGE]}
    return {}


def unstorable_in_request(request) -> dict[str, list[str]]:
    """Where ``request`` carries unstorable text: its path, headers, cookies, query or
    URL-encoded form body (a JSON body is the parser's to check, a multipart one the form
    fields')."""
    if is_unstorable(request.path_info):
        return {"path": [MESSAGE]}
    for header, value in request.META.items():
        if header.startswith("HTTP_") and isinstance(value, str) and is_unstorable(value):
            return {"headers": [MESSAGE]}
    # Cookies are unquoted by Django: "\000" in a quoted value becomes a NUL.
    if any(is_unstorable(name + value) for name, value in request.COOKIES.items()):
        return {"cookies": [MESSAGE]}
    found = _unstorable_parameter(request.GET.lists())
    if not found and request.content_type == "application/x-www-form-urlencoded":
        # A body too large or malformed is the view's to answer, as without this check.
        with contextlib.suppress(BadRequest, SuspiciousOperation):
            found = _unstorable_parameter(request.POST.lists())
    return found


def wants_json(request) -> bool:
    return (
        request.path_info.startswith("/api/")
        or request.path_info == reverse("admin:autocomplete")
        or "application/json" in request.headers.get("Accept", "")
    )


class RefuseUnstorableText:
    """A 400 for a request whose path, query, form fields or headers hold a NUL character or
    an unpaired surrogate: in the API's JSON error shape under ``/api/`` (and for the admin's
    JSON autocomplete), Django's plain 400 page elsewhere."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        found = unstorable_in_request(request)
        if not found:
            return self.get_response(request)
        if wants_json(request):
            return JsonResponse(
                error_body("validation_error", "Some fields are invalid.", found), status=400
            )
        return HttpResponseBadRequest(MESSAGE, content_type="text/plain; charset=utf-8")
