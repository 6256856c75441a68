"""The one request plan behind both clients: retries, errors, splitting and auth, through a faulty proxy.

The proxy is an ``httpx.MockTransport`` in front of a live fake-probe service: it can answer errors of
its own and records every request the client sent; everything else is forwarded unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from mig_annotator.client import AsyncMigClient, MigClient, MigServiceError
from mig_annotator.client.http import _retry_wait_s
from mig_annotator.schemas import TraceAnnotation
from tests.service.support import small_traces


class FaultyProxy:
    """Forwards to ``upstream``; ``faults`` are answered instead, one per annotate request, in order."""

    def __init__(
        self, upstream: str, faults: list[httpx.Response] | None = None, max_traces: int = 0
    ) -> None:
        self.upstream = upstream
        self.faults = list(faults or [])
        self.max_traces = max_traces
        self.annotate_sizes: list[int] = []
        self.authorization: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.authorization.append(request.headers.get("Authorization"))
        if request.url.path == "/v1/annotate":
            if self.faults:
                return self.faults.pop(0)
            self.annotate_sizes.append(len(json.loads(request.content)["traces"]))
        answer = httpx.request(
            request.method,
            f"{self.upstream}{request.url.path}",
            content=request.content,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        if request.url.path == "/v1/info" and self.max_traces:
            info = answer.json()
            info["limits"]["max_traces_per_request"] = self.max_traces
            return httpx.Response(200, json=info)
        return httpx.Response(answer.status_code, content=answer.content)


def sync_annotate(proxy: FaultyProxy, **client_options: Any) -> Callable[..., list[TraceAnnotation]]:
    def annotate(traces: Any, config: Any = None) -> list[TraceAnnotation]:
        http = httpx.Client(transport=httpx.MockTransport(proxy))
        with MigClient("http://mig.test", http_client=http, **client_options) as client:
            return client.annotate(traces, config)

    return annotate


def async_annotate(proxy: FaultyProxy, **client_options: Any) -> Callable[..., list[TraceAnnotation]]:
    def annotate(traces: Any, config: Any = None) -> list[TraceAnnotation]:
        async def run() -> list[TraceAnnotation]:
            http = httpx.AsyncClient(transport=httpx.MockTransport(proxy))
            async with AsyncMigClient("http://mig.test", http_client=http, **client_options) as client:
                return await client.annotate(traces, config)

        return asyncio.run(run())

    return annotate


DRIVERS = pytest.mark.parametrize("driver", [sync_annotate, async_annotate], ids=["sync", "async"])


def busy(status: int, retry_after: str = "0") -> httpx.Response:
    body = {"error": "overloaded", "message": "busy", "fields": [], "request_id": "r"}
    return httpx.Response(status, json=body, headers={"Retry-After": retry_after})


@DRIVERS
def test_429_and_503_are_retried_and_then_the_annotations_come_back(
    driver: Any, service_url: str, client: MigClient
) -> None:
    proxy = FaultyProxy(service_url, faults=[busy(429), busy(503)])
    traces = small_traces(3, prefix="retry-")
    assert driver(proxy, max_retries=2)(traces) == client.annotate(traces)
    assert proxy.annotate_sizes == [3] and proxy.faults == []


@DRIVERS
def test_the_retry_budget_ends_in_an_error_with_the_status(driver: Any, service_url: str) -> None:
    proxy = FaultyProxy(service_url, faults=[busy(503)] * 3)
    with pytest.raises(MigServiceError) as caught:
        driver(proxy, max_retries=1)(small_traces(1))
    assert (caught.value.status, caught.value.error) == (503, "overloaded")
    assert len(proxy.faults) == 1  # two tries: the first and one retry


@DRIVERS
def test_other_errors_are_not_retried_and_a_non_json_body_is_kept(driver: Any, service_url: str) -> None:
    proxy = FaultyProxy(service_url, faults=[httpx.Response(502, text="bad gateway"), busy(429)])
    with pytest.raises(MigServiceError) as caught:
        driver(proxy)(small_traces(1))
    assert (caught.value.status, caught.value.error, caught.value.message) == (
        502,
        "http_error",
        "bad gateway",
    )
    assert len(proxy.faults) == 1


@DRIVERS
def test_requests_are_split_to_the_server_limit_and_answers_keep_input_order(
    driver: Any, service_url: str, client: MigClient
) -> None:
    proxy = FaultyProxy(service_url, max_traces=2)
    traces = small_traces(5, prefix="split-")
    annotations = driver(proxy)(traces, {"watermark": "gain"})
    assert sorted(proxy.annotate_sizes) == [1, 2, 2]
    assert [a.trace_id for a in annotations] == [t.id for t in traces]
    assert annotations == client.annotate(traces, {"watermark": "gain"})


@DRIVERS
def test_the_api_key_comes_from_the_argument_or_the_environment(
    driver: Any, service_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = FaultyProxy(service_url)
    driver(proxy, api_key="sk-given")(small_traces(1))
    monkeypatch.setenv("MIG_SERVICE_API_KEY", "sk-env")
    driver(proxy)(small_traces(1))
    assert set(proxy.authorization) == {"Bearer sk-given", "Bearer sk-env"}


def test_retries_wait_as_the_server_says_capped() -> None:
    def response(retry_after: str | None) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": retry_after} if retry_after else {})

    assert _retry_wait_s(response("2"), attempt=0) == 2.0
    assert _retry_wait_s(response("600"), attempt=0) == 30.0
    assert _retry_wait_s(response(None), attempt=2) == 2.0


def test_the_url_comes_from_the_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIG_SERVICE_URL", "http://reward.internal:9000/")
    with MigClient() as client:
        assert client.base_url == "http://reward.internal:9000"
    monkeypatch.delenv("MIG_SERVICE_URL")
    assert AsyncMigClient().base_url == "http://127.0.0.1:8000"


def test_both_clients_send_a_minimum_probe_version_and_an_older_probe_answers_409(service_url: str) -> None:
    traces = small_traces(2)
    with MigClient(service_url) as client:
        current = client.annotate_results(traces, min_probe_version=1)
        assert [a.probe_version for a in current if isinstance(a, TraceAnnotation)] == [1, 1]
        with pytest.raises(MigServiceError) as refused:
            client.annotate_results(traces, min_probe_version=2)
    assert refused.value.status == 409 and "min_probe_version" in refused.value.message

    async def run() -> MigServiceError:
        async with AsyncMigClient(service_url) as client:
            try:
                await client.annotate_results(traces, min_probe_version=2)
            except MigServiceError as error:
                return error
        raise AssertionError("the async client scored with a probe older than required")

    assert asyncio.run(run()).status == 409
