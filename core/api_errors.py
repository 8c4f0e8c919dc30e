"""One JSON shape for every API error:

``{"error": {"code": "credit_limit_exceeded", "message": "...", "details": {...}}}``
"""

import logging

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from core.errors import DomainError

logger = logging.getLogger(__name__)

# A lost or refused database connection is the server's fault and passes: ask to retry.
RETRY_AFTER_SECONDS = 5


# Domain error codes and the HTTP status each maps to; anything unlisted is a 400.
STATUS_BY_CODE = {
    "credit_limit_exceeded": status.HTTP_402_PAYMENT_REQUIRED,
    "user_limit_exceeded": status.HTTP_402_PAYMENT_REQUIRED,
    "team_limit_exceeded": status.HTTP_402_PAYMENT_REQUIRED,
    "idempotency_conflict": status.HTTP_409_CONFLICT,
    "unknown_environment": status.HTTP_404_NOT_FOUND,
    "not_found": status.HTTP_404_NOT_FOUND,
    "product_not_enabled": status.HTTP_422_UNPROCESSABLE_ENTITY,
    "not_a_member": status.HTTP_422_UNPROCESSABLE_ENTITY,
    "period_closed": status.HTTP_422_UNPROCESSABLE_ENTITY,
    "timestamp_in_future": status.HTTP_422_UNPROCESSABLE_ENTITY,
    "unknown_agent": status.HTTP_422_UNPROCESSABLE_ENTITY,
    "permission_denied": status.HTTP_403_FORBIDDEN,
    "plan_required": status.HTTP_403_FORBIDDEN,
    "invalid_credentials": status.HTTP_400_BAD_REQUEST,
    "invalid_limit": status.HTTP_400_BAD_REQUEST,
    "invalid_limit_settings": status.HTTP_400_BAD_REQUEST,
    "invalid_grant": status.HTTP_400_BAD_REQUEST,
    "invalid_price": status.HTTP_400_BAD_REQUEST,
}


def error_body(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response(
            error_body(exc.code, exc.message, exc.details),
            status=STATUS_BY_CODE.get(exc.code, status.HTTP_400_BAD_REQUEST),
        )
    if isinstance(exc, OperationalError | InterfaceError):
        # The transaction is rolled back (nothing was charged); idempotency keys make a retry
        # safe. Django would answer with its HTML 500 page.
        logger.exception("event=database_unavailable")
        set_rollback()
        response = Response(
            error_body(
                "service_unavailable",
                "The service is briefly unavailable; retry with the same idempotency key.",
            ),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        code, message, details = "validation_error", "Some fields are invalid.", exc.detail
        if not isinstance(details, dict):
            details = {"non_field_errors": details}
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        message, details = str(detail), {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            details = {"retry_after_seconds": int(exc.wait)}
    response.data = error_body(str(code), message, details)
    return response


# Django's own error views (``handler400/404/500`` in ``config.urls``), for what never reaches
# a DRF view: a URL that matches no route, a request refused before routing, a crash. Under
# /api/ they answer in the one JSON shape; pages keep Django's HTML templates.


def _is_api(request) -> bool:
    return request.path_info.startswith("/api/")


def bad_request(request, exception):
    if _is_api(request):
        return JsonResponse(error_body("bad_request", "The request is malformed."), status=400)
    return defaults.bad_request(request, exception)


def not_found(request, exception):
    if _is_api(request):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return JsonResponse(
            error_body("server_error", "The server failed to answer; the error is logged."),
            status=500,
        )
    return defaults.server_error(request)
