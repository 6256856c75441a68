"""The errors the service answers, each with its HTTP status, and the handlers that render them."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Self

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mig_annotator.schemas.api import ErrorResponse, FieldError

logger = logging.getLogger("mig.service")


class ServiceError(Exception):
    """An error answered as :class:`schemas.api.ErrorResponse` with ``status``."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        fields: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = list(fields)
        self.headers = headers or {}

    @classmethod
    def for_field(cls, field: str, message: str) -> Self:
        return cls(f"{field}: {message}", [FieldError(field=field, message=message)])


class InvalidJSON(ServiceError):
    status, code = 400, "invalid_json"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class InvalidRequest(ServiceError):
    status, code = 422, "invalid_request"


class Overloaded(ServiceError):
    status, code = 429, "overloaded"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ProbeUnavailable(ServiceError):
    status, code = 503, "probe_unavailable"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReady(ProbeUnavailable):
    code = "not_ready"


class DeadlineExceeded(ServiceError):
    status, code = 504, "deadline_exceeded"


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "The body is not valid JSON."),
        (401, "No bearer API key (when keys are configured)."),
        (403, "The API key is not known."),
        (413, "The body, or the number of traces, is over a limit."),
        (422, "A field is invalid or over a limit; `fields` names it."),
        (429, "The queue is full; retry after `Retry-After` seconds."),
        (503, "The probe is loading or failed for this batch; retry after `Retry-After` seconds."),
        (504, "The request's deadline passed before it was scored."),
    )
}


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(request_id: str | None, error: ServiceError) -> JSONResponse:
    body = ErrorResponse(error=error.code, message=error.message, fields=error.fields, request_id=request_id)
    headers = dict(error.headers)
    if request_id:
        headers["X-Request-ID"] = request_id
    return JSONResponse(body.model_dump(mode="json"), status_code=error.status, headers=headers)


def field_path(location: Sequence[int | str]) -> str:
    """('body', 'traces', 3, 'steps') -> 'traces[3].steps'."""
    parts = list(location)
    if parts and parts[0] == "body":
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = exc.errors()
    if any(problem.get("type") == "json_invalid" for problem in problems):
        detail = next(p for p in problems if p.get("type") == "json_invalid")
        reason = (detail.get("ctx") or {}).get("error", detail.get("msg", "invalid JSON"))
        error: ServiceError = InvalidJSON(
            f"the body is not valid JSON: {reason}", [FieldError(field="body", message=str(reason))]
        )
        return error_response(request_id_of(request), error)
    fields = [
        FieldError(field=field_path(problem.get("loc", ())), message=str(problem.get("msg", "invalid")))
        for problem in problems
    ]
    summary = "; ".join(f"{item.field}: {item.message}" for item in fields[:5])
    return error_response(request_id_of(request), InvalidRequest(summary or "invalid request", fields))


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return error_response(request_id_of(request), exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_error(request, exc)

    async def on_json_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request_id_of(request), InvalidJSON(f"the body is not valid JSON: {exc}"))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error serving %s", request.url.path, exc_info=exc)
        return error_response(request_id_of(request), ServiceError("internal error; see the server log"))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(json.JSONDecodeError, on_json_error)
    app.add_exception_handler(RecursionError, on_json_error)
    app.add_exception_handler(Exception, on_unexpected)
