"""ASGI middleware: request ids and arrival times, per-endpoint metrics, the body size limit, and how the
traces of a request read their images (data only, within the configured limits)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Collection
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mig_annotator.schemas.trace_images import ImageLimits, ImageReading, image_reading
from mig_annotator.service.errors import PayloadTooLarge, error_response
from mig_annotator.service.metrics import ServiceMetrics
from mig_annotator.service.request_log import log_request, start_tally

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContextMiddleware:
    """Gives every request an id (the caller's ``X-Request-ID`` when sane) and its arrival time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["received_monotonic"] = time.monotonic()
        state["received_at"] = datetime.now(UTC)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class MetricsMiddleware:
    """Counts requests and their latency by endpoint (known paths only) and status, and logs one line per
    API request (:mod:`service.request_log`)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, endpoints: Collection[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = frozenset(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        answered = False
        tally = start_tally(scope)

        async def send_recording_status(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = int(message["status"]), True
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        except Exception:
            answered = True  # answered 500 by the server's error handler
            raise
        finally:
            endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
            labels = {"endpoint": endpoint, "status": str(status)}
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(**labels).inc()
            self.metrics.request_seconds.labels(**labels).observe(seconds)
            if tally is not None:
                log_request(scope, status if answered else 499, seconds, tally)


class ImageReadingMiddleware:
    """Traces parsed while a request is handled read image parts as data only (a path in a request body is
    refused: the service reads no local files for a caller) and within ``limits``."""

    def __init__(self, app: ASGIApp, limits: ImageLimits) -> None:
        self.app = app
        self.reading = ImageReading(allow_paths=False, limits=limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with image_reading(self.reading):
            await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413, from Content-Length or while reading, before parsing."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = PayloadTooLarge.for_field(
            "body", f"the body is over the limit of {self.max_bytes} bytes (MIG_MAX_BODY_BYTES)"
        )
        response = error_response(scope.get("state", {}).get("request_id"), error)
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None
