"""The vLLM server pool against plain HTTP servers on 127.0.0.1 that answer like vLLM's routes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mig_annotator.engine.probe.server_pool import (
    PoolSettings,
    ServerPool,
    ServersUnavailable,
)


@dataclass
class Behaviour:
    """How a fake server answers; tests change it while the server runs."""

    delay_s: float = 0.0
    health: int = 200
    mode: str = "ok"  # ok | drop (close the connection mid-call, as a dying server) | error (HTTP 500)
    received: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeVLLM:
    """/health, /v1/models and /v1/completions, as a vLLM OpenAI-compatible server answers them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.behaviour = Behaviour()
        behaviour, served = self.behaviour, name

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._answer(behaviour.health, {})
                elif self.path == "/v1/models":
                    self._answer(200, {"data": [{"id": "probe", "max_model_len": 2048}]})
                else:
                    self._answer(404, {"error": {"message": "no route"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with behaviour.lock:
                    behaviour.received[self.path] += 1
                    behaviour.in_flight += 1
                    behaviour.max_in_flight = max(behaviour.max_in_flight, behaviour.in_flight)
                try:
                    time.sleep(behaviour.delay_s)
                    if behaviour.mode == "drop":
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    if behaviour.mode == "error":
                        self._answer(500, {"error": {"message": "engine dead"}})
                        return
                    prompt = body["prompt"]
                    self._answer(
                        200, {"model": "probe", "server": served, "choices": [{"text": "", "prompt": prompt}]}
                    )
                finally:
                    with behaviour.lock:
                        behaviour.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[FakeVLLM, FakeVLLM]]:
    pair = FakeVLLM("a"), FakeVLLM("b")
    yield pair
    for server in pair:
        server.stop()


def completions(pool: ServerPool, prompt: int):
    return pool.request("POST", "/v1/completions", json={"model": "probe", "prompt": [prompt]})


FAST = PoolSettings(timeout_s=10, max_retries=3, backoff_s=0.01, health_interval_s=3600)


def test_a_request_goes_to_the_server_with_the_fewest_in_flight(servers) -> None:
    a, b = servers
    a.behaviour.delay_s = 1.0

    async def scenario() -> list[str]:
        pool = ServerPool([a.url, b.url], FAST)
        try:
            slow = asyncio.create_task(completions(pool, 0))  # to a (first, all idle); a holds it a second
            await asyncio.sleep(0.2)
            answered = [(await completions(pool, i)).json()["server"] for i in range(1, 6)]
            answered.append((await slow).json()["server"])
            return answered
        finally:
            await pool.aclose()

    answered = asyncio.run(scenario())
    assert answered == ["b"] * 5 + ["a"]
    assert a.behaviour.received["/v1/completions"] == 1


def test_concurrent_requests_are_spread_evenly(servers) -> None:
    a, b = servers
    for server in servers:
        server.behaviour.delay_s = 0.3

    async def scenario() -> None:
        pool = ServerPool([a.url, b.url], FAST)
        try:
            await asyncio.gather(*(completions(pool, i) for i in range(8)))
        finally:
            await pool.aclose()

    asyncio.run(scenario())
    assert a.behaviour.received["/v1/completions"] == 4
    assert b.behaviour.received["/v1/completions"] == 4


@pytest.mark.parametrize("failure", ["drop", "error"])
def test_a_request_whose_server_dies_mid_call_is_answered_by_another(servers, failure: str) -> None:
    a, b = servers
    a.behaviour.mode = failure

    async def scenario() -> tuple[list[str], list[bool]]:
        pool = ServerPool([a.url, b.url], FAST)
        try:
            answered = [(await completions(pool, i)).json()["server"] for i in range(4)]
            return answered, [server.healthy for server in pool.servers]
        finally:
            await pool.aclose()

    answered, healthy = asyncio.run(scenario())
    assert answered == ["b"] * 4
    assert a.behaviour.received["/v1/completions"] == 1  # taken out after its first failure
    assert healthy == [False, True]


def test_a_server_failing_its_health_check_is_taken_out_and_put_back_when_it_recovers(servers) -> None:
    a, b = servers
    a.behaviour.health = 503

    async def scenario() -> tuple[list[str], list[str]]:
        pool = ServerPool([a.url, b.url], FAST)
        try:
            await pool.check_health()
            while_out = [(await completions(pool, i)).json()["server"] for i in range(3)]
            a.behaviour.health = 200
            await pool.check_health()
            after = [(await completions(pool, i)).json()["server"] for i in range(4)]
            return while_out, after
        finally:
            await pool.aclose()

    while_out, after = asyncio.run(scenario())
    assert while_out == ["b"] * 3
    assert sorted(after) == ["a", "a", "b", "b"]


def test_the_background_health_check_puts_a_recovered_server_back(servers) -> None:
    a, b = servers
    a.behaviour.mode = "error"

    async def scenario() -> bool:
        pool = ServerPool([a.url, b.url], PoolSettings(max_retries=2, backoff_s=0.01, health_interval_s=0.05))
        try:
            await completions(pool, 0)  # a fails (taken out), b answers
            assert not pool.servers[0].healthy
            a.behaviour.mode = "ok"
            for _ in range(100):
                await asyncio.sleep(0.05)
                if pool.servers[0].healthy:
                    return True
            return False
        finally:
            await pool.aclose()

    assert asyncio.run(scenario())


def test_when_every_server_fails_the_error_names_the_servers_and_the_last_problem(servers) -> None:
    a, b = servers
    a.behaviour.mode = b.behaviour.mode = "error"

    async def scenario() -> None:
        pool = ServerPool([a.url, b.url], FAST)
        try:
            await completions(pool, 0)
        finally:
            await pool.aclose()

    with pytest.raises(ServersUnavailable, match=r"4 attempts over .*127\.0\.0\.1.*HTTP 500"):
        asyncio.run(scenario())


def test_a_client_error_comes_back_to_the_caller_without_a_retry(servers) -> None:
    a, b = servers

    async def scenario() -> int:
        pool = ServerPool([a.url, b.url], FAST)
        try:
            return (await pool.request("GET", "/no-such-route")).status_code
        finally:
            await pool.aclose()

    assert asyncio.run(scenario()) == 404


def test_each_asks_every_server_and_names_one_that_is_down(servers) -> None:
    a, b = servers

    async def scenario(urls: list[str]) -> list[str]:
        pool = ServerPool(urls, FAST)
        try:
            return [r.json()["data"][0]["id"] for r in await pool.each("GET", "/v1/models")]
        finally:
            await pool.aclose()

    assert asyncio.run(scenario([a.url, b.url])) == ["probe", "probe"]
    b.stop()
    with pytest.raises(ServersUnavailable, match=f"{b.url} is unavailable"):
        asyncio.run(scenario([a.url, b.url]))
