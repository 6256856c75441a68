"""HTTP clients of the reward service: one request plan, driven by a synchronous and an asyncio client.

The plan is written once, without I/O: :func:`_exchange` is a generator that yields what to do next (a
:class:`_Send` or a :class:`_Wait`) and is sent the HTTP responses (or the transport error); it retries
429/503 (honouring ``Retry-After``, capped at 30 s) and unreachable services (backoff 0.5 s * 2**attempt),
within ``max_retries`` and the call's deadline, and turns an error answer into :class:`MigServiceError`
(:class:`MigServiceUnavailable` when the service is down, busy or too slow: what a trainer may replace
by a fallback reward). :class:`_Rounds` plans one ``annotate``: requests of at most the server's
``max_traces_per_request`` (and ``queue_max_traces``; ``GET /v1/info``), sent with ``strict: false`` so a
bad trace costs only itself; the traces a request left unfinished at the service's deadline (a 504, or
``deadline_exceeded`` in place) are sent again in smaller requests, up to ``max_retries`` rounds.
:class:`MigClient` drives the plans with ``httpx.Client`` and ``time.sleep``; :class:`AsyncMigClient`
with ``httpx.AsyncClient`` and ``asyncio.sleep``, sending the requests of one round concurrently (never
more traces in flight than the service's queue takes). Results always come back in input order.

Each call (``annotate``, ``info``) has a client-side deadline, ``deadline_s`` from its start, that
bounds every request's timeout and every retry wait: past it the call raises
:class:`MigServiceUnavailable` (verl issue threads show reward calls that hang freeze whole runs).

The service URL defaults to ``$MIG_SERVICE_URL`` (else http://127.0.0.1:8000) and the API key to
``$MIG_SERVICE_API_KEY``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.api import (
    AnnotateResponse,
    ErrorResponse,
    InfoResponse,
    ReloadResponse,
    TokenRewards,
    TraceFailure,
)

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_URL",
    "URL_ENV",
    "AsyncMigClient",
    "MigClient",
    "MigServiceError",
    "MigServiceUnavailable",
    "TokenOffsets",
    "TokenRewards",
    "TraceFailure",
    "TraceLike",
    "TraceResult",
]

URL_ENV = "MIG_SERVICE_URL"
API_KEY_ENV = "MIG_SERVICE_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
_RETRIED_STATUSES = (429, 503)
_MAX_RETRY_WAIT_S = 30.0

TraceLike = Trace | Mapping[str, Any]
TraceResult = TraceAnnotation | TraceFailure
TokenOffsets = Sequence[Sequence[int]] | None
"""One trace's policy-token ``(start, end)`` character offsets into its completion, or None for none."""
"""One trace's answer: its annotation, or why it has none (``code`` invalid_trace or deadline_exceeded)."""


class MigServiceError(RuntimeError):
    """The service answered an error (after retries); carries its status, code and the fields at fault."""

    def __init__(self, status: int, error: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(f"HTTP {status} {error}: {message}" if status else f"{error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.fields = list(fields)


class MigServiceUnavailable(MigServiceError):
    """No answer in time: the service is unreachable (status 0), busy or failing (429, 5xx) after every
    retry, or the call's client-side deadline passed (error ``client_deadline``)."""


# ----------------------------------------------------------------------------------- the request plan


@dataclass(frozen=True, slots=True)
class _Send:
    """Send this request (``timeout`` seconds at most); the plan is then sent the response or the error."""

    method: str
    url: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class _Wait:
    """Sleep this long before the next step; the plan is then sent None."""

    seconds: float


_Reply = httpx.Response | httpx.TransportError | None
_Plan = Generator[_Send | _Wait, _Reply, httpx.Response]


def _exchange(
    url: str,
    method: str,
    headers: dict[str, str],
    max_retries: int,
    json: dict[str, Any] | None = None,
    deadline: float | None = None,
) -> _Plan:
    """One call with retries: returns the first response under 400, or raises :class:`MigServiceError`."""
    for attempt in itertools.count():
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise _past_deadline(url)
        reply = yield _Send(method, url, headers, json, remaining)
        assert reply is not None
        if isinstance(reply, httpx.TransportError):
            timed_out = isinstance(reply, httpx.TimeoutException)
            if timed_out and deadline is not None and time.monotonic() >= deadline - 0.01:
                raise _past_deadline(url) from reply
            if attempt >= max_retries:
                raise MigServiceUnavailable(0, "unreachable", f"{url}: {reply!r}") from reply
            wait = min(0.5 * 2**attempt, _MAX_RETRY_WAIT_S)
        elif reply.status_code < 400:
            return reply
        elif reply.status_code not in _RETRIED_STATUSES or attempt >= max_retries:
            raise _error_of(reply)
        else:
            wait = _retry_wait_s(reply, attempt)
        if deadline is not None and time.monotonic() + wait >= deadline:
            raise _past_deadline(url)
        yield _Wait(wait)
    raise AssertionError("unreachable")


def _past_deadline(url: str) -> MigServiceUnavailable:
    return MigServiceUnavailable(0, "client_deadline", f"{url}: no answer within the call's deadline_s")


def _error_of(response: httpx.Response) -> MigServiceError:
    kind = MigServiceUnavailable if response.status_code in (429, 502, 503, 504) else MigServiceError
    try:
        error = ErrorResponse.model_validate_json(response.content)
    except ValueError:
        return kind(response.status_code, "http_error", response.text[:500])
    return kind(response.status_code, error.error, error.message, [field.field for field in error.fields])


def _retry_wait_s(response: httpx.Response, attempt: int) -> float:
    """The server's ``Retry-After`` in seconds when it gave one, else 0.5 * 2**attempt; at most 30 s."""
    given = response.headers.get("Retry-After", "")
    wait = float(given) if given.replace(".", "", 1).isdigit() else 0.5 * 2**attempt
    return min(wait, _MAX_RETRY_WAIT_S)


def _trace_json(trace: TraceLike) -> dict[str, Any]:
    """The trace's JSON; ``group_id`` and ``images`` (the question's images, base64) only when set (a
    service older than the field refuses the key)."""
    if not isinstance(trace, Trace):
        return dict(trace)
    unset = {name for name in ("group_id", "images") if not getattr(trace, name)}
    return trace.model_dump(mode="json", exclude=unset or None)


_TRACE_PREFIX = re.compile(r"^(traces|token_offsets)\[(\d+)\]")


class _Rounds:
    """The requests of one ``annotate``, round by round: which traces to send, and what came back.

    ``bodies()`` gives the next round's requests (none when done); ``take(responses)`` reads them back,
    each a response or the :class:`MigServiceError` its plan ended in. A 504, or a trace answered
    ``deadline_exceeded``, puts the trace in the next round, whose requests hold half as many traces;
    after ``max_rounds`` such traces keep their ``deadline_exceeded`` failure.
    """

    def __init__(
        self,
        traces: Sequence[TraceLike],
        config: Mapping[str, Any] | None,
        chunk: int,
        max_rounds: int,
        token_offsets: Sequence[TokenOffsets] | None = None,
        min_probe_version: int | None = None,
    ) -> None:
        self._items = [_trace_json(trace) for trace in traces]
        if token_offsets is not None and len(token_offsets) != len(self._items):
            raise ValueError(
                f"token_offsets has {len(token_offsets)} entries for {len(self._items)} traces: give one "
                "per trace (None for a trace without offsets)"
            )
        self._offsets = (
            None
            if token_offsets is None
            else [None if given is None else [[int(a), int(b)] for a, b in given] for given in token_offsets]
        )
        self.token_rewards: list[TokenRewards | None] = [None] * len(self._items)
        self._config = {"config": dict(config)} if config else {}
        if min_probe_version is not None:
            self._config["min_probe_version"] = min_probe_version
        self._chunk = max(1, chunk)
        self._rounds_left = max_rounds
        self._todo = list(range(len(self._items)))
        self._sent: list[list[int]] = []
        self.results: list[TraceResult | None] = [None] * len(self._items)

    def bodies(self) -> list[dict[str, Any]]:
        if not self._todo or self._rounds_left <= 0:
            self._todo = []
            return []
        self._rounds_left -= 1
        todo, size = self._todo, self._chunk
        self._sent = [todo[start : start + size] for start in range(0, len(todo), size)]
        self._todo = []
        return [
            {"traces": [self._items[i] for i in chunk], "strict": False, **self._config}
            | ({} if self._offsets is None else {"token_offsets": [self._offsets[i] for i in chunk]})
            for chunk in self._sent
        ]

    def take(self, replies: Sequence[httpx.Response | MigServiceError]) -> None:
        unfinished = False
        for chunk, reply in zip(self._sent, replies, strict=True):
            if isinstance(reply, MigServiceError):
                if reply.status != 504:
                    raise reply
                message = f"HTTP 504 {reply.error}: {reply.message}"
                for i in chunk:
                    self._late(i, message)
                unfinished = True
                continue
            answer = AnnotateResponse.model_validate_json(reply.content)
            failures = {failure.index: failure for failure in answer.errors}
            placed = answer.token_rewards or [None] * len(chunk)
            for position, (i, annotation) in enumerate(zip(chunk, answer.annotations, strict=True)):
                if annotation is not None:
                    self.results[i] = annotation
                    self.token_rewards[i] = placed[position]
                    continue
                failure = failures[position]
                if failure.code == "deadline_exceeded":
                    self._late(i, failure.message)
                    unfinished = True
                else:
                    self.results[i] = failure.model_copy(
                        update={"index": i, "field": _TRACE_PREFIX.sub(rf"\1[{i}]", failure.field)}
                    )
        if unfinished:  # smaller requests next round: half the largest one sent
            self._chunk = max(1, min(self._chunk, max(len(chunk) for chunk in self._sent)) // 2)

    def _late(self, i: int, message: str) -> None:
        self._todo.append(i)
        self.results[i] = TraceFailure(
            index=i, field=f"traces[{i}]", message=message, code="deadline_exceeded"
        )

    def done(self) -> list[TraceResult]:
        assert all(result is not None for result in self.results)
        return self.results  # type: ignore[return-value]


def _all_annotated(results: Sequence[TraceResult]) -> list[TraceAnnotation]:
    """The annotations, or :class:`MigServiceError` naming every trace that has none."""
    failures = [result for result in results if isinstance(result, TraceFailure)]
    if failures:
        kind = (
            MigServiceUnavailable if all(f.code == "deadline_exceeded" for f in failures) else MigServiceError
        )
        status = 504 if kind is MigServiceUnavailable else 422
        summary = "; ".join(f"{f.field}: {f.message}" for f in failures[:5])
        raise kind(status, failures[0].code, summary, [f.field for f in failures])
    return list(results)  # type: ignore[arg-type]


class _ClientBase:
    """What both clients hold: where the service is, the key, the retry budget, the deadline and the
    server's limits."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        max_retries: int,
        deadline_s: float | None,
        max_traces_per_request: int | None,
    ) -> None:
        self._base_url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._max_retries = max_retries
        self._deadline_s = deadline_s
        self._own_limit = max_traces_per_request
        self._limits: tuple[int, int] | None = None  # (traces per request, traces the queue holds)

    @property
    def base_url(self) -> str:
        return self._base_url

    def _deadline(self) -> float | None:
        return None if self._deadline_s is None else time.monotonic() + self._deadline_s

    def _plan(
        self, method: str, path: str, json: dict[str, Any] | None = None, deadline: float | None = None
    ) -> _Plan:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return _exchange(f"{self._base_url}{path}", method, headers, self._max_retries, json, deadline)

    def _set_limits(self, info: InfoResponse) -> None:
        per_request = min(info.limits.max_traces_per_request, info.limits.queue_max_traces)
        if self._own_limit is not None:
            per_request = min(per_request, self._own_limit)
        self._limits = (max(1, per_request), info.limits.queue_max_traces)

    def _rounds(
        self,
        traces: Sequence[TraceLike],
        config: Mapping[str, Any] | None,
        token_offsets: Sequence[TokenOffsets] | None = None,
        min_probe_version: int | None = None,
    ) -> _Rounds:
        assert self._limits is not None
        return _Rounds(
            traces, config, self._limits[0], self._max_retries + 1, token_offsets, min_probe_version
        )


def _drive_sync(http: httpx.Client, plan: _Plan) -> httpx.Response:
    reply: _Reply = None
    try:
        while True:
            step = plan.send(reply)
            if isinstance(step, _Wait):
                time.sleep(step.seconds)
                reply = None
                continue
            try:
                reply = http.request(
                    step.method, step.url, headers=step.headers, json=step.json, timeout=_timeout(http, step)
                )
            except httpx.TransportError as error:
                reply = error
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def _drive_async(http: httpx.AsyncClient, plan: _Plan) -> httpx.Response:
    reply: _Reply = None
    try:
        while True:
            step = plan.send(reply)
            if isinstance(step, _Wait):
                await asyncio.sleep(step.seconds)
                reply = None
                continue
            try:
                reply = await http.request(
                    step.method, step.url, headers=step.headers, json=step.json, timeout=_timeout(http, step)
                )
            except httpx.TransportError as error:
                reply = error
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _timeout(http: httpx.Client | httpx.AsyncClient, step: _Send) -> httpx.Timeout:
    """The client's timeouts, none longer than what is left of the call's deadline."""
    if step.timeout is None:
        return http.timeout
    configured = http.timeout

    def bounded(part: float | None) -> float:
        return step.timeout if part is None else min(part, step.timeout)

    return httpx.Timeout(
        connect=bounded(configured.connect),
        read=bounded(configured.read),
        write=bounded(configured.write),
        pool=bounded(configured.pool),
    )


# ------------------------------------------------------------------------------------------- drivers


class MigClient(_ClientBase):
    """A synchronous client of the reward service (thread-safe).

    ``timeout_s``: each HTTP request; ``deadline_s``: each call, retries and all (None: no bound);
    ``max_retries``: retries of a busy or unreachable service, and rounds of resending unfinished traces;
    ``max_traces_per_request``: a smaller request size than the server's limit, e.g. to keep each request
    well within the service's deadline.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        deadline_s: float | None = 900.0,
        max_retries: int = 5,
        max_traces_per_request: int | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries, deadline_s, max_traces_per_request)
        self._http = http_client or httpx.Client(timeout=timeout_s)

    def __enter__(self) -> MigClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def info(self) -> InfoResponse:
        response = _drive_sync(self._http, self._plan("GET", "/v1/info", deadline=self._deadline()))
        return InfoResponse.model_validate_json(response.content)

    def reload(self, model: str | os.PathLike[str]) -> ReloadResponse:
        """Load the checkpoint folder ``model`` (a path on the service's disk) into the running probe
        (``POST /v1/admin/reload``; needs an admin key). Raises :class:`MigServiceError` when refused."""
        plan = self._plan(
            "POST", "/v1/admin/reload", json={"model": os.fspath(model)}, deadline=self._deadline()
        )
        return ReloadResponse.model_validate_json(_drive_sync(self._http, plan).content)

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
        """Annotations in input order; raises :class:`MigServiceError` naming every trace that has none."""
        return _all_annotated(self.annotate_results(traces, config))

    def annotate_results(
        self,
        traces: Sequence[TraceLike],
        config: Mapping[str, Any] | None = None,
        *,
        min_probe_version: int | None = None,
    ) -> list[TraceResult]:
        """One result per trace, in input order: its annotation, or the :class:`TraceFailure` in its place.

        ``min_probe_version``: the service refuses (409, :class:`MigServiceError`) while its probe is older
        than this (e.g. the ``probe_version`` a :meth:`reload` returned).
        Raises :class:`MigServiceUnavailable` when the service is down, busy or slow past the retries or
        the deadline, and :class:`MigServiceError` for a request the service refuses as a whole.
        """
        return self._run(traces, config, None, min_probe_version).done()

    def annotate_token_rewards(
        self,
        traces: Sequence[TraceLike],
        token_offsets: Sequence[TokenOffsets],
        config: Mapping[str, Any] | None = None,
    ) -> list[tuple[TraceResult, TokenRewards | None]]:
        """As :meth:`annotate_results`, each result with its rewards placed on the policy's tokens by the
        service: ``token_offsets[i]`` is trace i's tokens' ``(start, end)`` character offsets into its
        completion (a tokenizer's offset mapping, or :func:`schemas.token_alignment.token_offsets`), or
        None. The :class:`TokenRewards` is None for a failed trace or one without offsets; bad offsets are
        that trace's failure, naming ``token_offsets[i][k]``."""
        rounds = self._run(traces, config, token_offsets)
        return list(zip(rounds.done(), rounds.token_rewards, strict=True))

    def _run(
        self,
        traces: Sequence[TraceLike],
        config: Mapping[str, Any] | None,
        token_offsets: Sequence[TokenOffsets] | None,
        min_probe_version: int | None = None,
    ) -> _Rounds:
        deadline = self._deadline()
        if self._limits is None:
            info = _drive_sync(self._http, self._plan("GET", "/v1/info", deadline=deadline))
            self._set_limits(InfoResponse.model_validate_json(info.content))
        rounds = self._rounds(traces, config, token_offsets, min_probe_version)
        while bodies := rounds.bodies():
            rounds.take([self._send(body, deadline) for body in bodies])
        return rounds

    def _send(self, body: dict[str, Any], deadline: float | None) -> httpx.Response | MigServiceError:
        try:
            return _drive_sync(self._http, self._plan("POST", "/v1/annotate", body, deadline))
        except MigServiceError as error:
            if error.status == 504:
                return error
            raise


class AsyncMigClient(_ClientBase):
    """An asyncio client of the reward service; the requests of one annotate() are sent concurrently,
    never more traces at once than the service's queue holds. Options as for :class:`MigClient`."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        deadline_s: float | None = 900.0,
        max_retries: int = 5,
        max_traces_per_request: int | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries, deadline_s, max_traces_per_request)
        self._http = http_client or httpx.AsyncClient(timeout=timeout_s)

    async def __aenter__(self) -> AsyncMigClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def info(self) -> InfoResponse:
        response = await _drive_async(self._http, self._plan("GET", "/v1/info", deadline=self._deadline()))
        return InfoResponse.model_validate_json(response.content)

    async def reload(self, model: str | os.PathLike[str]) -> ReloadResponse:
        """As :meth:`MigClient.reload`."""
        plan = self._plan(
            "POST", "/v1/admin/reload", json={"model": os.fspath(model)}, deadline=self._deadline()
        )
        return ReloadResponse.model_validate_json((await _drive_async(self._http, plan)).content)

    async def annotate(
        self, traces: Sequence[TraceLike], config: Mapping[str, Any] | None = None
    ) -> list[TraceAnnotation]:
        """Annotations in input order; raises :class:`MigServiceError` naming every trace that has none."""
        return _all_annotated(await self.annotate_results(traces, config))

    async def annotate_results(
        self,
        traces: Sequence[TraceLike],
        config: Mapping[str, Any] | None = None,
        *,
        min_probe_version: int | None = None,
    ) -> list[TraceResult]:
        """As :meth:`MigClient.annotate_results`; a round's requests go out concurrently."""
        return (await self._run(traces, config, None, min_probe_version)).done()

    async def annotate_token_rewards(
        self,
        traces: Sequence[TraceLike],
        token_offsets: Sequence[TokenOffsets],
        config: Mapping[str, Any] | None = None,
    ) -> list[tuple[TraceResult, TokenRewards | None]]:
        """As :meth:`MigClient.annotate_token_rewards`."""
        rounds = await self._run(traces, config, token_offsets)
        return list(zip(rounds.done(), rounds.token_rewards, strict=True))

    async def _run(
        self,
        traces: Sequence[TraceLike],
        config: Mapping[str, Any] | None,
        token_offsets: Sequence[TokenOffsets] | None,
        min_probe_version: int | None = None,
    ) -> _Rounds:
        deadline = self._deadline()
        if self._limits is None:
            info = await _drive_async(self._http, self._plan("GET", "/v1/info", deadline=deadline))
            self._set_limits(InfoResponse.model_validate_json(info.content))
        assert self._limits is not None
        per_request, queue = self._limits
        in_flight = asyncio.Semaphore(max(1, queue // per_request))
        rounds = self._rounds(traces, config, token_offsets, min_probe_version)
        while bodies := rounds.bodies():
            replies = await asyncio.gather(*(self._send(body, deadline, in_flight) for body in bodies))
            rounds.take(replies)
        return rounds

    async def _send(
        self, body: dict[str, Any], deadline: float | None, in_flight: asyncio.Semaphore
    ) -> httpx.Response | MigServiceError:
        async with in_flight:
            try:
                return await _drive_async(self._http, self._plan("POST", "/v1/annotate", body, deadline))
            except MigServiceError as error:
                if error.status == 504:
                    return error
                raise
