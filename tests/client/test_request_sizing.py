"""The clients never send a request the service refuses: a GRPO step's batch (1,024 GSM8K rollouts, 256 long
chains of thought) goes through both clients with default settings, every trace answered and no 413; with
a tight probe budget (the old default of 48,000 tokens) the requests are packed to it; a trace over a
bound on its own fails alone with its reason, the rest answered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from functools import cache

import httpx
import pytest

from mig_annotator.client import AsyncMigClient, MigClient
from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.api import TraceFailure
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.client.step_batches import generated_gsm8k, long_cot, shared_gsm8k
from tests.client.support import fake_probe
from tests.service.support import live_server

OLD_DEFAULT_BUDGET = 48_000


@cache
def _batch(name: str) -> tuple[Trace, ...]:
    if name == "gsm8k-shared":
        shared = shared_gsm8k(1024)
        if shared is None:
            pytest.skip("shared data not present (../shared/data/gsm8k_rollouts.jsonl)")
        return tuple(shared)
    if name == "gsm8k-generated":
        return tuple(generated_gsm8k(1024))
    return tuple(long_cot(256))


class _Statuses:
    """The status and trace count of every /v1/annotate request a client sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def record(self, response: httpx.Response) -> None:
        if response.request.url.path == "/v1/annotate":
            traces = len(json.loads(response.request.content)["traces"])
            self.seen.append((response.status_code, traces))

    async def record_async(self, response: httpx.Response) -> None:
        self.record(response)


def _run(url: str, traces: Sequence[Trace], asynchronous: bool) -> tuple[list, _Statuses]:
    statuses = _Statuses()
    if asynchronous:

        async def go() -> list:
            http = httpx.AsyncClient(timeout=300, event_hooks={"response": [statuses.record_async]})
            async with AsyncMigClient(url, http_client=http) as client:
                return await client.annotate_results(traces)

        return asyncio.run(go()), statuses
    http_client = httpx.Client(timeout=300, event_hooks={"response": [statuses.record]})
    with MigClient(url, http_client=http_client) as client:
        return client.annotate_results(traces), statuses


def _all_answered(traces: Sequence[Trace], results: Sequence[object], statuses: _Statuses) -> None:
    assert [status for status, _ in statuses.seen if status != 200] == []
    assert all(isinstance(result, TraceAnnotation) for result in results)
    assert [result.trace_id for result in results] == [trace.id for trace in traces]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tight_budget_url(_service_environment_cleared: None) -> Iterator[str]:
    settings = ServiceSettings(max_request_probe_tokens=OLD_DEFAULT_BUDGET, audit_enabled=False)
    with live_server(create_app(settings, probe=fake_probe())) as url:
        yield url


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("batch", ["gsm8k-shared", "gsm8k-generated", "long-cot"])
def test_a_step_sized_batch_is_answered_whole_with_default_settings(
    service_url: str, batch: str, asynchronous: bool
) -> None:
    traces = _batch(batch)
    results, statuses = _run(service_url, traces, asynchronous)
    _all_answered(traces, results, statuses)


@pytest.mark.parametrize(
    ("batch", "asynchronous"),
    [("gsm8k-generated", True), ("long-cot", False)],
    ids=["gsm8k-async", "long-sync"],
)
def test_requests_are_packed_to_the_services_probe_budget(
    tight_budget_url: str, batch: str, asynchronous: bool
) -> None:
    traces = _batch(batch)[:256]
    # by count alone (64 a request) these requests would be over 48,000 byte tokens: refused with 413
    results, statuses = _run(tight_budget_url, traces, asynchronous)
    _all_answered(traces, results, statuses)
    assert len(statuses.seen) > len(traces) / 64
    assert max(count for _, count in statuses.seen) < 64


@pytest.fixture(scope="module")
def small_bounds_url(_service_environment_cleared: None) -> Iterator[str]:
    settings = ServiceSettings(max_request_probe_tokens=5000, max_body_bytes=20_000, audit_enabled=False)
    with live_server(create_app(settings, probe=fake_probe())) as url:
        yield url


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_trace_over_a_bound_fails_alone_with_its_reason(small_bounds_url: str, asynchronous: bool) -> None:
    traces = list(generated_gsm8k(40))
    base = traces[5]
    lines = "\n".join(f"Step {k}: we add {k} and keep going with the running total." for k in range(60))
    over_tokens = base.model_copy(
        update={"id": "over-tokens", "completion": f"{lines}\nA: 1"}
    )  # ~8,000 tokens
    over_body = base.model_copy(update={"id": "over-body", "completion": "x " * 12_000 + "\nA: 1"})  # 24 kB
    traces[5], traces[17] = over_tokens, over_body
    results, statuses = _run(small_bounds_url, traces, asynchronous)
    assert [status for status, _ in statuses.seen if status != 200] == []
    token_failure, body_failure = results[5], results[17]
    assert isinstance(token_failure, TraceFailure) and token_failure.code == "invalid_trace"
    assert token_failure.field == "traces[5].completion"
    assert "over the limit of 5000 per request" in token_failure.message
    assert isinstance(body_failure, TraceFailure) and body_failure.field == "traces[17]"
    assert "over the service's body limit of 20000 bytes" in body_failure.message
    others = [result for index, result in enumerate(results) if index not in (5, 17)]
    assert all(isinstance(result, TraceAnnotation) for result in others)
