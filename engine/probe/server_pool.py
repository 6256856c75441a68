"""A pool of vLLM servers behind one probe: least-in-flight routing, health checks, retry on another server.

* **Routing.** Each request goes to the healthy server with the fewest requests in flight (ties: the one
  used least recently), so a slow or busy server gets less work.
* **Health.** A server whose request fails at the transport level (refused, reset, timed out: it died
  mid-call) or answers 5xx is taken out at once. A background task (started with the first request) asks
  every server's ``/health`` every ``health_interval_s``: a server that fails it is taken out, one that
  answers 200 to a check begun after it was taken out is put back.
* **Retry.** A failed attempt is retried on another server (one not tried yet for this request when there is
  one), up to ``max_retries`` times with exponential back-off between rounds. Scoring requests are pure
  functions of their body, so sending one twice is harmless; the caller's answer is the first success.
  429 means busy, not broken: that server stays in and the attempt moves on.

Answers other than 429/5xx come back to the caller as they are (a 4xx is the caller's error to report).
With one URL the pool behaves like a single client with retries.

How :class:`engine.probe.vllm_server.VLLMServerProbe` uses it: the probe makes one pool from
``parse_base_urls(settings.base_url)`` and sends every request through :meth:`ServerPool.request`, on the
probe's own event loop; :class:`ServersUnavailable` becomes ``VLLMServerUnavailable`` (the service answers
503) and any other status >= 400 a ``ProbeError``. At start-up :meth:`ServerPool.each` asks every server, so
all of them must serve the same model, context length and tokenizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from mig_annotator.engine.probe.base import ProbeError
from mig_annotator.engine.probe.settings import parse_base_urls

logger = logging.getLogger(__name__)


class ServersUnavailable(ProbeError):
    """No server of the pool answered a request within its retries."""


@dataclass
class ServerState:
    """One server as the pool sees it."""

    url: str
    client: httpx.AsyncClient
    healthy: bool = True
    in_flight: int = 0
    last_used: int = 0
    failures: int = 0  # failed attempts so far
    answered: int = 0  # requests answered so far
    problem: str = ""  # why it was last taken out
    down_since: float = 0.0  # time.monotonic() when it was last taken out


@dataclass(frozen=True)
class PoolSettings:
    timeout_s: float = 120.0
    max_concurrency: int = 8  # requests in flight over the whole pool
    max_retries: int = 4
    backoff_s: float = 0.5
    health_interval_s: float = 5.0
    health_timeout_s: float = 5.0
    headers: dict[str, str] = field(default_factory=dict)


class ServerPool:
    """Sends HTTP requests to the best server of a pool (async; one event loop)."""

    def __init__(
        self,
        urls: Sequence[str],
        settings: PoolSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings or PoolSettings()
        urls = parse_base_urls(list(urls))
        self._servers = [
            ServerState(
                url,
                httpx.AsyncClient(
                    base_url=url,
                    timeout=self._settings.timeout_s,
                    headers=self._settings.headers,
                    transport=transport,
                ),
            )
            for url in urls
        ]
        self._clock = itertools.count(1)
        self._semaphore: asyncio.Semaphore | None = None
        self._health_task: asyncio.Task[None] | None = None

    @property
    def servers(self) -> list[ServerState]:
        return list(self._servers)

    def describe(self) -> str:
        return ", ".join(server.url for server in self._servers)

    async def request(
        self, method: str, route: str, *, json: Any = None, retries: int | None = None
    ) -> httpx.Response:
        """Send one request to the pool; the first answer that is not 429/5xx comes back.

        Raises :class:`ServersUnavailable` when every attempt failed.
        """
        self._start_health_checks()
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._settings.max_concurrency)
        retries = self._settings.max_retries if retries is None else retries
        tried: set[str] = set()
        problems: list[str] = []
        rounds = 0
        for _attempt in range(retries + 1):
            server = self._choose(tried)
            if server is None:  # every healthy server was tried: back off, then a new round
                await asyncio.sleep(self._settings.backoff_s * 2 ** min(rounds, 6))
                rounds += 1
                tried.clear()
                server = self._choose(tried) or self._any()
            tried.add(server.url)
            outcome = await self._attempt(server, method, route, json)
            if isinstance(outcome, httpx.Response):
                return outcome
            problems.append(f"{server.url}: {outcome}")
        raise ServersUnavailable(
            f"no vLLM server answered {method} {route} ({retries + 1} attempts over {self.describe()}; "
            f"last: {problems[-1] if problems else 'no answer'})"
        )

    async def each(
        self, method: str, route: str, *, json: Any = None, retries: int | None = None
    ) -> list[httpx.Response]:
        """Send the request to every server, in order (start-up checks: every server must serve the same
        model and tokenizer). A server that cannot be reached (it may still be starting) is asked again, up
        to ``retries`` times (default ``max_retries``) with the pool's back-off; then
        :class:`ServersUnavailable` names it."""
        retries = self._settings.max_retries if retries is None else retries
        responses = []
        for server in self._servers:
            for attempt in range(retries + 1):
                try:
                    responses.append(await server.client.request(method, route, json=json))
                    break
                except httpx.TransportError as error:
                    if attempt == retries:
                        raise ServersUnavailable(
                            f"the vLLM server at {server.url} is unavailable ({method} {route} failed "
                            f"{retries + 1} times; last: {type(error).__name__}: {error})"
                        ) from error
                    await asyncio.sleep(self._settings.backoff_s * 2**attempt)
        return responses

    async def _attempt(self, server: ServerState, method: str, route: str, body: Any) -> httpx.Response | str:
        assert self._semaphore is not None
        server.in_flight += 1
        server.last_used = next(self._clock)
        try:
            async with self._semaphore:
                response = await server.client.request(method, route, json=body)
        except httpx.TransportError as error:  # refused, reset mid-call, timed out
            self._take_out(server, f"{type(error).__name__}: {error}")
            return f"{type(error).__name__}: {error}"
        finally:
            server.in_flight -= 1
        if response.status_code == 429:
            server.failures += 1
            return "HTTP 429 (busy)"
        if response.status_code >= 500:
            self._take_out(server, f"HTTP {response.status_code}")
            return f"HTTP {response.status_code}: {response.text[:200]}"
        server.answered += 1
        return response

    def _choose(self, tried: set[str]) -> ServerState | None:
        """The healthy untried server with the fewest in flight (then least recently used)."""
        candidates = [s for s in self._servers if s.healthy and s.url not in tried]
        if not candidates:
            return None
        return min(candidates, key=lambda s: (s.in_flight, s.last_used))

    def _any(self) -> ServerState:
        """When none is healthy, any may be back: the least recently used is tried."""
        healthy = [s for s in self._servers if s.healthy]
        return min(healthy or self._servers, key=lambda s: (s.in_flight, s.last_used))

    def _take_out(self, server: ServerState, problem: str) -> None:
        server.failures += 1
        server.problem = problem
        server.down_since = time.monotonic()
        if server.healthy:
            logger.warning("vLLM server %s taken out of the pool: %s", server.url, problem)
        server.healthy = False

    # -- health checks ------------------------------------------------------------------------------------

    def _start_health_checks(self) -> None:
        if self._health_task is None or self._health_task.done():
            self._health_task = asyncio.get_running_loop().create_task(self._health_loop())

    async def _health_loop(self) -> None:
        while True:
            await self.check_health()
            await asyncio.sleep(self._settings.health_interval_s)

    async def check_health(self) -> None:
        """Ask every server's ``/health`` once: take out those that fail, put back those that answer."""
        await asyncio.gather(*(self._check(server) for server in self._servers))

    async def _check(self, server: ServerState) -> None:
        started = time.monotonic()
        try:
            response = await server.client.get("/health", timeout=self._settings.health_timeout_s)
            ok = response.status_code == 200
            problem = f"/health: HTTP {response.status_code}"
        except httpx.TransportError as error:
            ok, problem = False, f"/health: {type(error).__name__}"
        if ok and not server.healthy and started > server.down_since:  # a check begun after the failure
            logger.info("vLLM server %s is healthy again: back in the pool", server.url)
            server.healthy = True
        elif not ok:
            self._take_out(server, problem)

    async def aclose(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._health_task
            self._health_task = None
        for server in self._servers:
            await server.client.aclose()
