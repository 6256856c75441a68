"""Under concurrency, overload, deadlines and probe failures the live service stays exact and honest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mig_annotator.engine.probe.base import Probe
from mig_annotator.engine.probe.fake import FakeProbe
from mig_annotator.schemas import TraceAnnotation
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server, small_traces, trace_json

pytestmark = pytest.mark.model


async def _post_all(url: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        return await asyncio.gather(*(client.post("/v1/annotate", json=body) for body in bodies))


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_64_concurrent_requests_equal_single_request_results_exactly(service_url: str) -> None:
    distinct = small_traces(8, prefix="crowd-")
    with httpx.Client(base_url=service_url, timeout=300) as client:
        alone = {}
        for trace in distinct:
            response = client.post("/v1/annotate", json={"trace": trace_json(trace)})
            assert response.status_code == 200
            alone[trace.id] = TraceAnnotation.model_validate(response.json()["annotations"][0])
    batches_before = _metric(service_url, "mig_batch_traces_count")

    # each request its own GRPO group: copies of one trace from requests queued one after another would
    # otherwise form one group, scored together (equal to 1e-5, not bit for bit: test_grpo_groups.py)
    bodies = [{"trace": {**trace_json(distinct[i % 8]), "group_id": f"request-{i}"}} for i in range(64)]
    responses = asyncio.run(_post_all(service_url, bodies))

    assert [r.status_code for r in responses] == [200] * 64
    for index, response in enumerate(responses):
        (served,) = [TraceAnnotation.model_validate(a) for a in response.json()["annotations"]]
        assert served == alone[distinct[index % 8].id]  # bit-identical floats, not approximately equal
    batches = _metric(service_url, "mig_batch_traces_count") - batches_before
    assert batches < 64  # traces from different requests shared micro-batches


@pytest.fixture(scope="module")
def small_queue_url(probe: Probe) -> Iterator[str]:
    settings = ServiceSettings(queue_max_traces=4, max_traces_per_request=2, audit_enabled=False)
    with live_server(create_app(settings, probe=probe)) as url:
        yield url


def test_overload_answers_429_with_retry_after_and_never_5xx(small_queue_url: str) -> None:
    traces = small_traces(80, prefix="flood-")
    bodies = [{"traces": [trace_json(traces[2 * i]), trace_json(traces[2 * i + 1])]} for i in range(40)]

    responses = asyncio.run(_post_all(small_queue_url, bodies))

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}
    assert statuses.count(429) >= 1 and statuses.count(200) >= 2
    for body, response in zip(bodies, responses, strict=True):
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"] == "overloaded"
        else:
            served = [a["trace_id"] for a in response.json()["annotations"]]
            assert served == [t["id"] for t in body["traces"]]  # type: ignore[union-attr]
    assert _metric(small_queue_url, 'mig_rejected_total{reason="queue_full"}') == statuses.count(429)


def test_a_request_past_its_deadline_gets_504_and_the_service_goes_on() -> None:
    slow = FakeProbe()
    settings = ServiceSettings(request_timeout_s=0.5, max_request_probe_tokens=10**6, audit_enabled=False)
    with live_server(create_app(settings, probe=slow)) as url:
        slow.delay_s = 1.5
        response = httpx.post(
            f"{url}/v1/annotate", json={"trace": trace_json(small_traces(1)[0])}, timeout=30
        )
        assert response.status_code == 504
        assert response.json()["error"] == "deadline_exceeded"
        slow.delay_s = 0.0
        settings_ok = httpx.get(f"{url}/readyz").status_code
        assert settings_ok == 200
        assert _metric(url, 'mig_rejected_total{reason="deadline"}') == 1


def test_a_probe_failure_fails_only_its_batch_with_503_then_recovers() -> None:
    flaky = FakeProbe()
    with live_server(create_app(ServiceSettings(audit_enabled=False), probe=flaky)) as url:
        flaky.fail_next(1)
        bodies = [{"trace": trace_json(t)} for t in small_traces(6, prefix="flaky-")]

        responses = asyncio.run(_post_all(url, bodies))

        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503} and statuses.count(503) >= 1
        failed = next(r for r in responses if r.status_code == 503)
        assert failed.json()["error"] == "probe_unavailable"
        assert "injected failure" in failed.json()["message"]
        assert int(failed.headers["Retry-After"]) >= 1
        assert _metric(url, "mig_probe_failures_total") == 1

        again = asyncio.run(_post_all(url, bodies))
        assert [r.status_code for r in again] == [200] * 6
        assert httpx.get(f"{url}/readyz").json()["ready"] is True


def test_a_probe_that_fails_to_load_leaves_the_process_up_but_not_ready(tmp_path: Path) -> None:
    settings = ServiceSettings(probe={"model": str(tmp_path / "no-such-model")}, audit_enabled=False)
    with live_server(create_app(settings), wait_ready=False) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz").json()["probe"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["probe"] == "failed" and "no-such-model" in ready.json()["detail"]
        response = httpx.post(f"{url}/v1/annotate", json={"trace": trace_json(small_traces(1)[0])})
        assert response.status_code == 503
        assert response.json()["error"] == "not_ready" and response.headers["Retry-After"] == "5"
        assert httpx.get(f"{url}/v1/info").json()["probe"]["model"] is None
