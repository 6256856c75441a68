"""HTTP clients of the reward service: one request plan, driven by a synchronous and an asyncio client.

The plan is written once, without I/O: :func:`_exchange` is a generator that yields what to do next (a
:class:`_Send` or a :class:`_Wait`) and is sent the HTTP responses; it retries 429/503 (honouring
``Retry-After``, capped at 30 s) and turns an error answer into :class:`MigServiceError`. Splitting a
large ``annotate`` into requests of at most the server's ``max_traces_per_request`` and reading the
responses back are shared functions too. :class:`MigClient` drives the plan with ``httpx.Client`` and
``time.sleep``; :class:`AsyncMigClient` with ``httpx.AsyncClient`` and ``asyncio.sleep``, sending the
requests of one ``annotate`` concurrently. Annotations always come back in input order.

The service URL defaults to ``$MIG_SERVICE_URL`` (else http://127.0.0.1:8000) and the API key to
``$MIG_SERVICE_API_KEY``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.api import AnnotateResponse, ErrorResponse, InfoResponse

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_URL",
    "URL_ENV",
    "AsyncMigClient",
    "MigClient",
    "MigServiceError",
    "TraceLike",
]

URL_ENV = "MIG_SERVICE_URL"
API_KEY_ENV = "MIG_SERVICE_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
_RETRIED_STATUSES = (429, 503)
_MAX_RETRY_WAIT_S = 30.0

TraceLike = Trace | Mapping[str, Any]


class MigServiceError(RuntimeError):
    """The service answered an error (after retries); carries its status, code and the fields at fault."""

    def __init__(self, status: int, error: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(f"HTTP {status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.fields = list(fields)


# ----------------------------------------------------------------------------------- the request plan


@dataclass(frozen=True, slots=True)
class _Send:
    """Send this request; the plan is then sent the response."""

    method: str
    url: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _Wait:
    """Sleep this long before the next step; the plan is then sent None."""

    seconds: float


_Plan = Generator[_Send | _Wait, httpx.Response | None, httpx.Response]


def _exchange(
    url: str, method: str, headers: dict[str, str], max_retries: int, json: dict[str, Any] | None = None
) -> _Plan:
    """One call with retries: returns the first response under 400, or raises :class:`MigServiceError`."""
    for attempt in itertools.count():
        response = yield _Send(method, url, headers, json)
        assert response is not None
        if response.status_code < 400:
            return response
        if response.status_code not in _RETRIED_STATUSES or attempt >= max_retries:
            raise _error_of(response)
        yield _Wait(_retry_wait_s(response, attempt))
    raise AssertionError("unreachable")


def _error_of(response: httpx.Response) -> MigServiceError:
    try:
        error = ErrorResponse.model_validate_json(response.content)
    except ValueError:
        return MigServiceError(response.status_code, "http_error", response.text[:500])
    return MigServiceError(
        response.status_code, error.error, error.message, [field.field for field in error.fields]
    )


def _retry_wait_s(response: httpx.Response, attempt: int) -> float:
    """The server's ``Retry-After`` in seconds when it gave one, else 0.5 * 2**attempt; at most 30 s."""
    given = response.headers.get("Retry-After", "")
    wait = float(given) if given.replace(".", "", 1).isdigit() else 0.5 * 2**attempt
    return min(wait, _MAX_RETRY_WAIT_S)


def _annotate_bodies(
    traces: Sequence[TraceLike], config: Mapping[str, Any] | None, max_traces: int
) -> list[dict[str, Any]]:
    """The request bodies of one ``annotate``: the traces in order, at most ``max_traces`` a request."""
    items = [trace.model_dump(mode="json") if isinstance(trace, Trace) else dict(trace) for trace in traces]
    chunks = [items[start : start + max_traces] for start in range(0, len(items), max_traces)] or [items]
    extra = {"config": dict(config)} if config else {}
    return [{"traces": chunk, **extra} for chunk in chunks]


def _annotations_of(responses: Sequence[httpx.Response]) -> list[TraceAnnotation]:
    return [
        annotation
        for response in responses
        for annotation in AnnotateResponse.model_validate_json(response.content).annotations
    ]


class _ClientBase:
    """What both clients hold: where the service is, the key, the retry budget and the server's limit."""

    def __init__(self, base_url: str | None, api_key: str | None, max_retries: int) -> None:
        self._base_url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._max_retries = max_retries
        self._max_traces: int | None = None

    @property
    def base_url(self) -> str:
        return self._base_url

    def _plan(self, method: str, path: str, json: dict[str, Any] | None = None) -> _Plan:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return _exchange(f"{self._base_url}{path}", method, headers, self._max_retries, json)


# ------------------------------------------------------------------------------------------- drivers


class MigClient(_ClientBase):
    """A synchronous client of the reward service (thread-safe)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 5,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries)
        self._http = http_client or httpx.Client(timeout=timeout_s)

    def __enter__(self) -> MigClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def info(self) -> InfoResponse:
        return InfoResponse.model_validate_json(self._run(self._plan("GET", "/v1/info")).content)

    def ready(self) -> bool:
        try:
            return self._http.get(f"{self.base_url}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_until_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.base_url} was not ready within {timeout_s}s")
            time.sleep(0.2)

    def annotate(
        self, traces: Sequence[TraceLike], config: Mapping[str, Any] | None = None
    ) -> list[TraceAnnotation]:
        """Annotations in input order; more traces than one request takes are sent in several, in turn."""
        if self._max_traces is None:
            self._max_traces = self.info().limits.max_traces_per_request
        bodies = _annotate_bodies(traces, config, self._max_traces)
        return _annotations_of([self._run(self._plan("POST", "/v1/annotate", body)) for body in bodies])

    def _run(self, plan: _Plan) -> httpx.Response:
        reply: httpx.Response | None = None
        try:
            while True:
                step = plan.send(reply)
                if isinstance(step, _Wait):
                    time.sleep(step.seconds)
                    reply = None
                else:
                    reply = self._http.request(step.method, step.url, headers=step.headers, json=step.json)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class AsyncMigClient(_ClientBase):
    """An asyncio client of the reward service; a large annotate() sends its requests concurrently."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 5,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries)
        self._http = http_client or httpx.AsyncClient(timeout=timeout_s)

    async def __aenter__(self) -> AsyncMigClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def info(self) -> InfoResponse:
        return InfoResponse.model_validate_json((await self._run(self._plan("GET", "/v1/info"))).content)

    async def annotate(
        self, traces: Sequence[TraceLike], config: Mapping[str, Any] | None = None
    ) -> list[TraceAnnotation]:
        """Annotations in input order; the requests of one call are sent concurrently."""
        if self._max_traces is None:
            self._max_traces = (await self.info()).limits.max_traces_per_request
        bodies = _annotate_bodies(traces, config, self._max_traces)
        responses = await asyncio.gather(*(self._run(self._plan("POST", "/v1/annotate", b)) for b in bodies))
        return _annotations_of(responses)

    async def _run(self, plan: _Plan) -> httpx.Response:
        reply: httpx.Response | None = None
        try:
            while True:
                step = plan.send(reply)
                if isinstance(step, _Wait):
                    await asyncio.sleep(step.seconds)
                    reply = None
                else:
                    reply = await self._http.request(
                        step.method, step.url, headers=step.headers, json=step.json
                    )
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
