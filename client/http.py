"""HTTP clients of the reward service: one request plan, driven by a synchronous and an asyncio client.

The plan is written once, without I/O: :func:`_exchange` is a generator that yields what to do next (a
:class:`_Send` or a :class:`_Wait`) and is sent the HTTP responses (or the transport error); it retries
429/503 (honouring ``Retry-After``, capped at 30 s) and unreachable services (backoff 0.5 s * 2**attempt),
within ``max_retries`` and the call's deadline, and turns an error answer into :class:`MigServiceError`
(:class:`MigServiceUnavailable` when the service is down, busy or too slow: what a trainer may replace
by a fallback reward). :class:`client.request_plan.Rounds` plans one ``annotate``: requests within every
bound the services advertise (``GET /v1/info``: traces, body bytes, forwarded probe tokens), sent with
``strict: false`` so a bad trace costs only itself; the traces a request left unfinished at the service's
deadline (a 504, or ``deadline_exceeded`` in place) are sent again in smaller requests, up to
``max_retries`` rounds. :class:`MigClient` drives the plans with ``httpx.Client`` and ``time.sleep``;
:class:`AsyncMigClient` with ``httpx.AsyncClient`` and ``asyncio.sleep``, sending the requests of one
round concurrently (never more traces in flight than the services' queues take). Results always come back
in input order.

Replicas (:mod:`client.replicas`): ``base_url`` may name several services (a list, or a comma-separated
string); each request goes to the least-loaded one, and a request whose replica does not answer goes to
another (an unreachable replica is not retried while another is up).

Each call (``annotate``, ``info``) has a client-side deadline, ``deadline_s`` from its start, that
bounds every request's timeout and every retry wait: past it the call raises
:class:`MigServiceUnavailable` (verl issue threads show reward calls that hang freeze whole runs).

The service URL(s) default to ``$MIG_SERVICE_URL`` (else http://127.0.0.1:8000) and the API key to
``$MIG_SERVICE_API_KEY``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from mig_annotator.client.replicas import Replica, Replicas, service_urls
from mig_annotator.client.request_plan import (
    RequestFailed,
    Rounds,
    ServiceLimits,
    TokenOffsets,
    TraceLike,
    TraceResult,
)
from mig_annotator.schemas import TraceAnnotation
from mig_annotator.schemas.api import ErrorResponse, InfoResponse, ReloadResponse, TokenRewards, TraceFailure

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
    content: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Wait:
    """Sleep this long before the next step; the plan is then sent None."""

    seconds: float


_Reply = httpx.Response | httpx.TransportError | None
_Plan = Generator[_Send | _Wait, _Reply, httpx.Response]
R = TypeVar("R")


def _exchange(
    url: str,
    method: str,
    headers: dict[str, str],
    max_retries: int,
    json: dict[str, Any] | None = None,
    deadline: float | None = None,
    content: bytes | None = None,
    transport_retries: int | None = None,
) -> _Plan:
    """One call with retries: returns the first response under 400, or raises :class:`MigServiceError`.
    ``transport_retries``: retries of an unreachable service (default ``max_retries``; 0 where another
    replica can take the call at once)."""
    unreachable_retries = max_retries if transport_retries is None else transport_retries
    for attempt in itertools.count():
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise _past_deadline(url)
        reply = yield _Send(method, url, headers, json, remaining, content)
        assert reply is not None
        if isinstance(reply, httpx.TransportError):
            timed_out = isinstance(reply, httpx.TimeoutException)
            if timed_out and deadline is not None and time.monotonic() >= deadline - 0.01:
                raise _past_deadline(url) from reply
            if attempt >= unreachable_retries:
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
    """What both clients hold: where the replicas are, the key, the retry budget, the deadline and the
    services' limits."""

    def __init__(
        self,
        base_url: str | Sequence[str] | None,
        api_key: str | None,
        max_retries: int,
        deadline_s: float | None,
        max_traces_per_request: int | None,
    ) -> None:
        self._replicas = Replicas(service_urls(base_url, URL_ENV, DEFAULT_URL))
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._max_retries = max_retries
        self._deadline_s = deadline_s
        self._own_limit = max_traces_per_request
        self._limits: ServiceLimits | None = None

    @property
    def base_url(self) -> str:
        """The first service URL."""
        return self._replicas.all[0].url

    @property
    def base_urls(self) -> list[str]:
        """Every replica's URL."""
        return [replica.url for replica in self._replicas.all]

    def _deadline(self) -> float | None:
        return None if self._deadline_s is None else time.monotonic() + self._deadline_s

    def _plan(
        self,
        method: str,
        path: str,
        json: dict[str, Any] | None = None,
        deadline: float | None = None,
        *,
        replica: Replica | None = None,
        content: bytes | None = None,
    ) -> _Plan:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        if content is not None:
            headers["Content-Type"] = "application/json"
        url = (replica or self._replicas.all[0]).url
        # with another replica to go to, an unreachable one is not waited for
        transport_retries = 0 if replica is not None and len(self._replicas) > 1 else None
        return _exchange(
            f"{url}{path}", method, headers, self._max_retries, json, deadline, content, transport_retries
        )

    def _set_limits(self, infos: Sequence[InfoResponse]) -> None:
        self._limits = ServiceLimits.of(infos, self._own_limit)

    def _rounds(
        self,
        traces: Sequence[TraceLike],
        config: Mapping[str, Any] | None,
        token_offsets: Sequence[TokenOffsets] | None = None,
        min_probe_version: int | None = None,
    ) -> Rounds:
        assert self._limits is not None
        return Rounds(traces, config, self._limits, self._max_retries + 1, token_offsets, min_probe_version)

    def _annotate_plan(
        self, body: bytes, traces: int, deadline: float | None
    ) -> Generator[_Send | _Wait, _Reply, httpx.Response | RequestFailed]:
        """One request to the least-loaded replica, to another when that one fails; ends in the response,
        or the :class:`RequestFailed` of a 413 or 504 (other errors raise)."""
        replica = None
        for attempt in itertools.count():
            replica = self._replicas.pick(avoid=replica)
            replica.in_flight += traces
            try:
                plan = self._plan("POST", "/v1/annotate", None, deadline, replica=replica, content=body)
                return (yield from plan)
            except MigServiceError as error:
                if error.status in _KEPT_STATUSES:
                    return _answered(error)
                if not self._failover(replica, error, attempt):
                    raise
            finally:
                replica.in_flight -= traces
        raise AssertionError("unreachable")

    def _failover(self, replica: Replica, error: MigServiceError, attempt: int) -> bool:
        """Whether to send a failed request to another replica (setting this one aside)."""
        if not isinstance(error, MigServiceUnavailable) or error.error == "client_deadline":
            return False
        if error.status not in (0, 502, 503) or len(self._replicas) < 2:
            return False
        Replicas.set_aside(replica)
        return attempt < self._max_retries * len(self._replicas) + 1


def _answered(reply: httpx.Response | MigServiceError) -> httpx.Response | RequestFailed:
    """A response, or the failure a round's plan reads (504 and 413 only: others are raised)."""
    if isinstance(reply, httpx.Response):
        return reply
    return RequestFailed(reply.status, reply.error, reply.message, reply.fields)


_KEPT_STATUSES = (413, 504)
"""Request failures a round handles (resent later, in halves, or as a trace's failure); others raise."""


def _drive_sync(http: httpx.Client, plan: Generator[_Send | _Wait, _Reply, R]) -> R:
    reply: _Reply = None
    try:
        while True:
            step = plan.send(reply)
            if isinstance(step, _Wait):
                time.sleep(step.seconds)
                reply = None
                continue
            try:
                reply = http.request(**_request_of(http, step))
            except httpx.TransportError as error:
                reply = error
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def _drive_async(http: httpx.AsyncClient, plan: Generator[_Send | _Wait, _Reply, R]) -> R:
    reply: _Reply = None
    try:
        while True:
            step = plan.send(reply)
            if isinstance(step, _Wait):
                await asyncio.sleep(step.seconds)
                reply = None
                continue
            try:
                reply = await http.request(**_request_of(http, step))
            except httpx.TransportError as error:
                reply = error
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _request_of(http: httpx.Client | httpx.AsyncClient, step: _Send) -> dict[str, Any]:
    """``http.request``'s arguments for one step."""
    return {
        "method": step.method,
        "url": step.url,
        "headers": step.headers,
        "json": step.json,
        "content": step.content,
        "timeout": _timeout(http, step),
    }


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
        base_url: str | Sequence[str] | None = None,
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
        """The first replica's ``GET /v1/info`` that answers."""
        return self._infos(self._deadline())[0]

    def _infos(self, deadline: float | None) -> list[InfoResponse]:
        """Every replica's info that answered (a replica that did not is set aside); raises the first
        replica's error when none answered."""
        infos, errors = [], []
        for replica in self._replicas.all:
            try:
                plan = self._plan("GET", "/v1/info", deadline=deadline, replica=replica)
                infos.append(InfoResponse.model_validate_json(_drive_sync(self._http, plan).content))
            except MigServiceError as error:
                Replicas.set_aside(replica)
                errors.append(error)
        if not infos:
            raise errors[0]
        return infos

    def reload(self, model: str | os.PathLike[str]) -> ReloadResponse:
        """Load the checkpoint folder ``model`` (a path on the service's disk) into the running probe of
        every replica (``POST /v1/admin/reload``; needs an admin key); the last replica's answer. Raises
        :class:`MigServiceError` when one refuses."""
        answer = None
        for replica in self._replicas.all:
            plan = self._plan(
                "POST", "/v1/admin/reload", {"model": os.fspath(model)}, self._deadline(), replica=replica
            )
            answer = ReloadResponse.model_validate_json(_drive_sync(self._http, plan).content)
        assert answer is not None
        return answer

    def ready(self) -> bool:
        """Whether a replica is ready."""
        for url in self.base_urls:
            try:
                if self._http.get(f"{url}/readyz").status_code == 200:
                    return True
            except httpx.HTTPError:
                continue
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
    ) -> Rounds:
        deadline = self._deadline()
        if self._limits is None:
            self._set_limits(self._infos(deadline))
        rounds = self._rounds(traces, config, token_offsets, min_probe_version)
        while bodies := rounds.bodies():
            rounds.take(
                [
                    self._send(body, traces, deadline)
                    for body, traces in zip(bodies, rounds.sizes(), strict=True)
                ]
            )
        return rounds

    def _send(self, body: bytes, traces: int, deadline: float | None) -> httpx.Response | RequestFailed:
        return _drive_sync(self._http, self._annotate_plan(body, traces, deadline))


class AsyncMigClient(_ClientBase):
    """An asyncio client of the reward service; the requests of one annotate() are sent concurrently,
    never more traces at once than the service's queue holds. Options as for :class:`MigClient`."""

    def __init__(
        self,
        base_url: str | Sequence[str] | None = None,
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
        """As :meth:`MigClient.info`."""
        return (await self._infos(self._deadline()))[0]

    async def _infos(self, deadline: float | None) -> list[InfoResponse]:
        """As :meth:`MigClient._infos`, the replicas asked concurrently."""

        async def ask(replica: Replica) -> InfoResponse | MigServiceError:
            try:
                plan = self._plan("GET", "/v1/info", deadline=deadline, replica=replica)
                return InfoResponse.model_validate_json((await _drive_async(self._http, plan)).content)
            except MigServiceError as error:
                Replicas.set_aside(replica)
                return error

        answers = await asyncio.gather(*(ask(replica) for replica in self._replicas.all))
        infos = [answer for answer in answers if isinstance(answer, InfoResponse)]
        if not infos:
            raise next(answer for answer in answers if isinstance(answer, MigServiceError))
        return infos

    async def reload(self, model: str | os.PathLike[str]) -> ReloadResponse:
        """As :meth:`MigClient.reload`."""
        answer = None
        for replica in self._replicas.all:
            plan = self._plan(
                "POST", "/v1/admin/reload", {"model": os.fspath(model)}, self._deadline(), replica=replica
            )
            answer = ReloadResponse.model_validate_json((await _drive_async(self._http, plan)).content)
        assert answer is not None
        return answer

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
    ) -> Rounds:
        deadline = self._deadline()
        if self._limits is None:
            self._set_limits(await self._infos(deadline))
        assert self._limits is not None
        slots = _TraceSlots(self._limits.queue_traces)
        rounds = self._rounds(traces, config, token_offsets, min_probe_version)
        while bodies := rounds.bodies():
            sends = (
                self._send(body, count, deadline, slots)
                for body, count in zip(bodies, rounds.sizes(), strict=True)
            )
            rounds.take(await asyncio.gather(*sends))
        return rounds

    async def _send(
        self, body: bytes, traces: int, deadline: float | None, slots: _TraceSlots
    ) -> httpx.Response | RequestFailed:
        """Within the traces the services' queues hold."""
        async with slots.holding(traces):
            plan = self._annotate_plan(body, traces, deadline)
            return await _drive_async(self._http, plan)


class _TraceSlots:
    """At most ``total`` traces in flight at once (a request over it alone waits for all of them)."""

    def __init__(self, total: int) -> None:
        self._total = max(1, total)
        self._free = self._total
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def holding(self, traces: int) -> AsyncIterator[None]:
        wanted = min(traces, self._total)
        async with self._changed:
            await self._changed.wait_for(lambda: self._free >= wanted)
            self._free -= wanted
        try:
            yield
        finally:
            async with self._changed:
                self._free += wanted
                self._changed.notify_all()
