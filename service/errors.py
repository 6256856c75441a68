"""HTTP errors: the HTTP layer's own (JSON, auth, body size), the one mapping of domain failures
(:mod:`mig_annotator.service.failures`) to statuses, and the handlers that render the error envelope."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Self

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mig_annotator.schemas.api import ErrorResponse, FieldError
from mig_annotator.service.failures import (
    AnswersUncheckable,
    DeadlinePassed,
    InvalidInput,
    NotReady,
    ProbeFailure,
    ProbeTooOld,
    QueueFull,
    ReloadRejected,
    ScoringFailed,
    ServiceFailure,
    ShuttingDown,
    TooManyTraces,
    field_path,
)

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


class NotFound(ServiceError):
    status, code = 404, "not_found"


class MethodNotAllowed(ServiceError):
    status, code = 405, "method_not_allowed"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidRequest(ServiceError):
    status, code = 422, "invalid_request"


#: Each domain failure's HTTP status and error code (the most specific class in a failure's MRO wins).
FAILURE_STATUS: dict[type[ServiceFailure], tuple[int, str]] = {
    ServiceFailure: (500, "internal_error"),
    ScoringFailed: (500, "internal_error"),
    InvalidInput: (422, "invalid_request"),
    TooManyTraces: (413, "payload_too_large"),
    QueueFull: (429, "overloaded"),
    ProbeFailure: (503, "probe_unavailable"),
    AnswersUncheckable: (503, "probe_unavailable"),
    ShuttingDown: (503, "probe_unavailable"),
    NotReady: (503, "not_ready"),
    DeadlinePassed: (504, "deadline_exceeded"),
    ProbeTooOld: (409, "probe_too_old"),
    ReloadRejected: (422, "invalid_request"),
}


def http_error(failure: ServiceFailure) -> ServiceError:
    """The HTTP answer to a domain failure: its status, code, fields and ``Retry-After`` (503s get one)."""
    status, code = next(FAILURE_STATUS[kind] for kind in type(failure).__mro__ if kind in FAILURE_STATUS)
    retry_after = (
        failure.retry_after_s if failure.retry_after_s is not None else (1 if status == 503 else None)
    )
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    error = ServiceError(failure.message, failure.fields, headers)
    error.status, error.code = status, code
    return error


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "The body is not valid JSON."),
        (401, "No bearer API key (when keys are configured)."),
        (403, "The API key is not known."),
        (413, "The body, or the number of traces, is over a limit."),
        (409, "The probe is older than the request's min_probe_version; retry after a reload."),
        (415, "The body is not sent as JSON (Content-Type: application/json)."),
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


def _http_error(request: Request, exc: StarletteHTTPException) -> ServiceError:
    """Starlette's and FastAPI's own HTTP errors (unknown path, wrong method, unparsable body) as ours."""
    path, method = request.url.path, request.method
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        return NotFound(f"no endpoint at {path}; see /docs for the API")
    if exc.status_code == 405:
        allowed = headers.get("Allow", headers.get("allow", ""))
        error: ServiceError = MethodNotAllowed(f"{method} is not allowed on {path}; use {allowed}")
        error.headers = headers
        return error
    if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not parse the body
        return _body_error(exc.__cause__)
    error = ServiceError(str(exc.detail), headers=headers)
    error.status = exc.status_code
    error.code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return error


def _body_error(cause: BaseException) -> InvalidJSON:
    if isinstance(cause, RecursionError):
        reason = "it is nested too deeply"
    elif isinstance(cause, UnicodeDecodeError):
        reason = f"it is not valid UTF-8 ({cause.reason} at byte {cause.start})"
    else:
        reason = str(cause) or type(cause).__name__
    return InvalidJSON(f"the body is not valid JSON: {reason}", [FieldError(field="body", message=reason)])


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return error_response(request_id_of(request), exc)

    async def on_failure(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceFailure)
        return error_response(request_id_of(request), http_error(exc))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_error(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(request_id_of(request), _http_error(request, exc))

    async def on_json_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request_id_of(request), _body_error(exc))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error serving %s", request.url.path, exc_info=exc)
        return error_response(request_id_of(request), ServiceError("internal error; see the server log"))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(ServiceFailure, on_failure)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)  # FastAPI's HTTPException too
    app.add_exception_handler(json.JSONDecodeError, on_json_error)
    app.add_exception_handler(RecursionError, on_json_error)
    app.add_exception_handler(Exception, on_unexpected)
