"""The one application error type and the handler that renders every API error in one shape:

    {"error": {"code": "...", "message": "...", "field": "..."}}

`field` appears only when one input field is at fault. Services raise `ApplicationError`
(or a subclass); views never build error bodies by hand.
"""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A failure the client can act on: it maps to a 4xx (or 503) with a stable code."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.field = field


class Throttled(ApplicationError):
    """429 `throttled`, with `Retry-After` (whole seconds, at least 1)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "throttled"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    return {"error": error}


def error_response(
    status_code: int, code: str, message: str, field: str | None = None
) -> JsonResponse:
    return JsonResponse(error_body(code, message, field), status=status_code)


def _first_validation_error(detail: Any, path: str = "") -> tuple[str | None, str, str]:
    """Walk DRF's nested error detail down to its first message: (field, code, message)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = path if key == "non_field_errors" else (f"{path}.{key}" if path else str(key))
            return _first_validation_error(value, name)
    if isinstance(detail, list) and detail:
        return _first_validation_error(detail[0], path)
    message = str(detail)
    code = getattr(detail, "code", None) or "invalid"
    return (path or None, str(code), message)


_VALIDATION_CODES = {"required": "missing_field", "null": "missing_field", "blank": "missing_field"}

_STATUS_CODES = {
    exceptions.ParseError: "invalid_json",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Throttled) else None
        body = error_body(exc.code, exc.message, exc.field)
        return Response(body, status=exc.status_code, headers=headers)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is unreachable (or went away mid-request): a retryable 503, as the
        # internal API answers, rather than a 500 that reads like a bug. Nothing was written:
        # every write runs in a transaction that this error rolled back.
        logger.error("database unavailable: %s", type(exc).__name__)
        return Response(
            error_body("unavailable", "The service is temporarily unavailable; retry shortly."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django turns it into a 500 and logs it
    if isinstance(exc, exceptions.ValidationError):
        field, code, message = _first_validation_error(exc.detail)
        code = _VALIDATION_CODES.get(code, "invalid_request")
        if field and not message.lower().startswith(field.split(".")[-1].lower()):
            message = f"{field}: {message}"
        response.data = error_body(code, message, field)
        return response
    hint = getattr(getattr(context.get("request"), "_request", None), "credential_hint", None)
    if isinstance(exc, exceptions.NotAuthenticated) and hint is not None:
        # A credential was sent to the wrong place (accounts.login_tokens): say what to send.
        response.data = error_body(*hint)
        return response
    code = next((c for cls, c in _STATUS_CODES.items() if isinstance(exc, cls)), "error")
    detail = getattr(exc, "detail", str(exc))
    # A specific code given where the exception is raised (`AuthenticationFailed(msg,
    # code="invalid_api_key")`) wins over the generic one of its class.
    detail_code = getattr(detail, "code", None)
    if detail_code and detail_code != getattr(exc, "default_code", None):
        code = str(detail_code)
    response.data = error_body(code, str(detail))
    return response


def json_404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(404, "not_found", "No such endpoint.")


def json_500(request: HttpRequest) -> JsonResponse:
    return error_response(500, "server_error", "Internal server error.")


def json_400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(400, "bad_request", "Bad request.")


def json_403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(403, "permission_denied", "Permission denied.")


# --- OpenAPI: the error shape, for `extend_schema(responses=...)` in every app --------------


class _ErrorDetailSerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. `email_taken`.")
    message = serializers.CharField(help_text="One human-readable sentence.")
    field = serializers.CharField(
        required=False, help_text="The input field at fault, when exactly one is."
    )


class ErrorResponseSerializer(serializers.Serializer[Any]):
    error = _ErrorDetailSerializer()


def error_responses(*status_codes: int, **descriptions: str) -> dict[int, OpenApiResponse]:
    """`{400: OpenApiResponse(ErrorResponseSerializer, ...), ...}` for `extend_schema`.

    `descriptions` maps `s400="codes: email_taken, weak_password"` style keyword arguments to
    the description of each status."""
    return {
        status_code: OpenApiResponse(
            response=ErrorResponseSerializer,
            description=descriptions.get(f"s{status_code}", "Error, in the common error shape."),
        )
        for status_code in status_codes
    }
