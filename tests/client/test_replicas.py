"""Replicas: the clients take several service URLs (a list or a comma-separated string), send each request to
the least-loaded replica, and send a failed replica's traces to another. Two real ``mig-annotator serve
--backend fake`` processes on 127.0.0.1; one is killed with SIGKILL mid-batch: every trace is answered
exactly once, in order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from mig_annotator.cli.serve_process import ServeProcess
from mig_annotator.client import AsyncMigClient, MigClient
from mig_annotator.schemas import TraceAnnotation
from tests.client.step_batches import generated_gsm8k

REPO = Path(__file__).resolve().parents[2]
TRACES = 192
PER_REQUEST = 8
KILL_AFTER = 4  # answers from the replica that is then killed


@pytest.fixture(scope="module")
def three_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServeProcess]]:
    """Three fake-probe services started at once, each scoring call slowed a little (10 ms) so a batch
    spans many requests: each kill test kills one and keeps the shared survivor, the second."""
    env = {
        "PYTHONPATH": str(REPO),
        "MIG_AUDIT_ENABLED": "false",
        "MIG_LOG_LEVEL": "warning",
        "MIG_PROBE__DELAY_S": "0.01",
    }
    cwd = tmp_path_factory.mktemp("replicas")
    servers = [
        ServeProcess(args=["--backend", "fake"], env=env, cwd=cwd, ready_timeout_s=180, stop_grace_s=5)
        for _ in range(3)
    ]
    with ExitStack() as stack, ThreadPoolExecutor(3) as starting:
        for server in starting.map(stack.enter_context, servers):
            assert server.process is not None
        yield servers


class _KillMidBatch:
    """Counts each replica's answered requests and the trace ids it was sent; SIGKILLs ``victim`` once it
    has answered :data:`KILL_AFTER` requests."""

    def __init__(self, victim: ServeProcess) -> None:
        self.victim = victim
        self.answered: dict[int, int] = {}
        self.killed = False

    def record(self, response: httpx.Response) -> None:
        if response.request.url.path != "/v1/annotate":
            return
        port = response.request.url.port or 0
        self.answered[port] = self.answered.get(port, 0) + 1
        if not self.killed and port == self.victim.port and self.answered[port] >= KILL_AFTER:
            assert self.victim.process is not None
            os.kill(self.victim.process.pid, signal.SIGKILL)
            self.killed = True

    async def record_async(self, response: httpx.Response) -> None:
        self.record(response)


def _check(results: list, two_replicas: list[ServeProcess], watcher: _KillMidBatch) -> None:
    expected = [trace.id for trace in generated_gsm8k(TRACES)]
    assert all(isinstance(result, TraceAnnotation) for result in results)
    assert [result.trace_id for result in results] == expected  # each once, in order
    victim, survivor = two_replicas
    assert watcher.killed
    assert victim.process is not None and victim.process.wait(timeout=10) == -signal.SIGKILL
    # both served; the survivor took the rest
    assert watcher.answered[victim.port] >= KILL_AFTER
    assert watcher.answered[survivor.port] > TRACES // PER_REQUEST // 2
    served = httpx.get(f"{survivor.url}/metrics").text
    assert "mig_traces_annotated_total" in served


def test_the_sync_client_moves_a_killed_replicas_traces_to_the_other(
    three_services: list[ServeProcess],
) -> None:
    two_replicas = three_services[:2]
    watcher = _KillMidBatch(two_replicas[0])
    urls = ",".join(server.url for server in two_replicas)  # as OpenRLHF passes them
    http = httpx.Client(timeout=60, event_hooks={"response": [watcher.record]})
    with MigClient(urls, http_client=http, max_traces_per_request=PER_REQUEST) as client:
        assert client.base_urls == [server.url for server in two_replicas]
        results = client.annotate_results(generated_gsm8k(TRACES))
    _check(results, two_replicas, watcher)


def test_the_async_client_moves_a_killed_replicas_traces_to_the_other(
    three_services: list[ServeProcess],
) -> None:
    two_replicas = [three_services[2], three_services[1]]
    watcher = _KillMidBatch(two_replicas[0])

    async def run() -> list:
        http = httpx.AsyncClient(timeout=60, event_hooks={"response": [watcher.record_async]})
        urls = [server.url for server in two_replicas]
        async with AsyncMigClient(urls, http_client=http, max_traces_per_request=PER_REQUEST) as client:
            return await client.annotate_results(generated_gsm8k(TRACES))

    _check(asyncio.run(run()), two_replicas, watcher)


def test_requests_go_to_the_least_loaded_replica() -> None:
    from mig_annotator.client.replicas import Replicas, service_urls

    replicas = Replicas(service_urls("http://a:1, http://b:2/", "UNUSED_ENV", "http://c:3"))
    assert [replica.url for replica in replicas.all] == ["http://a:1", "http://b:2"]
    first = replicas.pick()
    first.in_flight += 16
    second = replicas.pick()
    assert second is not first  # the other one has nothing in flight
    second.in_flight += 32
    assert replicas.pick() is first  # 16 < 32
    Replicas.set_aside(first)
    assert replicas.pick() is second  # the one set aside is not picked while another is up
    assert json.dumps(service_urls(["http://x:9"], "UNUSED_ENV", "http://c:3")) == '["http://x:9"]'
