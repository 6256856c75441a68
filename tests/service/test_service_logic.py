"""Pure logic of the service: micro-batch formation, OpenRLHF splitting, scalars, settings, client retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from mig_annotator.schemas.api import AnnotateRequest, OpenRLHFRewardRequest, ScoringOptions
from mig_annotator.schemas.config import ScoringConfig
from mig_annotator.service.batcher import Deliver, MicroBatcher, ScoringJob
from mig_annotator.service.errors import http_error
from mig_annotator.service.failures import (
    DeadlinePassed,
    InvalidInput,
    NotReady,
    ProbeFailure,
    QueueFull,
    ShuttingDown,
    field_path,
)
from mig_annotator.service.metrics import ServiceMetrics
from mig_annotator.service.openrlhf import split_completion
from mig_annotator.service.settings import ServiceSettings


class _Prepared:
    """Stands in for a PreparedTrace: the batcher only reads the token count."""

    def __init__(self, name: str, tokens: int) -> None:
        self.name = name
        self.probe_tokens = tokens


class _RecordingRun:
    """A run_batch that records batches and answers each job with its name (or fails on demand)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail_batches: set[int] = set()

    def __call__(self, jobs: Sequence[ScoringJob], deliver: Deliver) -> None:
        self.batches.append([job.prepared.name for job in jobs])  # type: ignore[attr-defined]
        if len(self.batches) - 1 in self.fail_batches:
            deliver(jobs[0], jobs[0].prepared.name)  # type: ignore[arg-type, attr-defined]
            raise ProbeFailure("boom")
        for job in jobs:
            deliver(job, job.prepared.name)  # type: ignore[arg-type, attr-defined]


def _batcher(run: _RecordingRun, **overrides: Any) -> MicroBatcher:
    options = {
        "max_tokens": 100,
        "max_wait_s": 0.05,
        "max_queue": 10,
        "metrics": ServiceMetrics(),
        **overrides,
    }
    return MicroBatcher(run, **options)


def _submit(
    batcher: MicroBatcher, *items: tuple[str, int], deadline_s: float = 60.0
) -> list[asyncio.Future[Any]]:
    prepared = [_Prepared(name, tokens) for name, tokens in items]
    return batcher.submit(prepared, time.monotonic() + deadline_s)  # type: ignore[arg-type]


def test_concurrent_requests_share_batches_up_to_the_token_budget() -> None:
    async def scenario() -> tuple[list[list[str]], list[Any]]:
        run = _RecordingRun()
        batcher = _batcher(run)
        batcher.start()
        futures = (
            _submit(batcher, ("a", 40), ("b", 40)) + _submit(batcher, ("c", 40)) + _submit(batcher, ("d", 10))
        )
        results = await asyncio.gather(*futures)
        await batcher.stop()
        return run.batches, results

    batches, results = asyncio.run(scenario())
    assert results == ["a", "b", "c", "d"]
    assert batches == [["a", "b"], ["c", "d"]]  # 80 + 40 > 100: c waits for the next batch


def test_a_full_queue_refuses_the_whole_request() -> None:
    async def scenario() -> None:
        batcher = _batcher(_RecordingRun(), max_queue=3)
        batcher.start()
        first = _submit(batcher, ("a", 1), ("b", 1))
        with pytest.raises(QueueFull) as refused:
            _submit(batcher, ("c", 1), ("d", 1))
        assert refused.value.retry_after_s == 1
        assert batcher.queued == 2  # nothing of the refused request was queued
        await asyncio.gather(*first)
        await batcher.stop()

    asyncio.run(scenario())


def test_a_probe_failure_fails_only_the_unfinished_traces_of_its_batch() -> None:
    async def scenario() -> list[Any]:
        run = _RecordingRun()
        run.fail_batches = {0}
        batcher = _batcher(run, max_tokens=20)
        batcher.start()
        futures = _submit(batcher, ("a", 10), ("b", 10), ("c", 10))
        results = await asyncio.gather(*futures, return_exceptions=True)
        later = await asyncio.gather(*_submit(batcher, ("d", 10)))
        await batcher.stop()
        return [*results, *later]

    a, b, c, d = asyncio.run(scenario())
    assert a == "a"  # delivered before the failure
    assert isinstance(b, ProbeFailure) and "boom" in b.message
    assert c == "c" and d == "d"  # the next batches run normally


def test_traces_whose_request_gave_up_are_not_scored() -> None:
    async def scenario() -> list[list[str]]:
        run = _RecordingRun()
        batcher = _batcher(run, max_wait_s=0.1)
        batcher.start()
        futures = _submit(batcher, ("a", 10), ("b", 10))
        futures[0].cancel()
        await futures[1]
        await batcher.stop()
        return run.batches

    assert asyncio.run(scenario()) == [["b"]]


def test_traces_whose_deadline_passed_in_the_queue_get_no_probe_work() -> None:
    async def scenario() -> tuple[list[list[str]], list[Any]]:
        run = _RecordingRun()
        batcher = _batcher(run, max_wait_s=0.2)
        batcher.start()
        expired = _submit(batcher, ("late", 10), deadline_s=0.05)
        live = _submit(batcher, ("on-time", 10))
        results = await asyncio.gather(*expired, *live, return_exceptions=True)
        await batcher.stop()
        return run.batches, results

    batches, (late, on_time) = asyncio.run(scenario())
    assert batches == [["on-time"]]  # the expired trace never reached the probe
    assert isinstance(late, DeadlinePassed) and on_time == "on-time"


def test_stopping_fails_what_is_still_queued() -> None:
    async def scenario() -> BaseException | None:
        batcher = _batcher(_RecordingRun(), max_wait_s=5)
        batcher.start()
        (future,) = _submit(batcher, ("a", 1))
        await batcher.stop()
        return future.exception()

    assert isinstance(asyncio.run(scenario()), ShuttingDown)


@pytest.mark.parametrize(
    ("failure", "status", "code", "retry_after"),
    [
        (InvalidInput.for_field("traces[0].completion", "empty"), 422, "invalid_request", None),
        (QueueFull("full", retry_after_s=7), 429, "overloaded", "7"),
        (ProbeFailure("gone"), 503, "probe_unavailable", "1"),
        (NotReady("loading", retry_after_s=5), 503, "not_ready", "5"),
        (DeadlinePassed("late"), 504, "deadline_exceeded", None),
    ],
)
def test_domain_failures_map_to_http_in_one_place(
    failure: Any, status: int, code: str, retry_after: str | None
) -> None:
    error = http_error(failure)
    assert (error.status, error.code, error.message) == (status, code, failure.message)
    assert error.headers.get("Retry-After") == retry_after
    assert error.fields == failure.fields


@pytest.mark.parametrize(
    ("query", "prompt", "expected"),
    [
        ("Q: 2+2?\nA: 4", "Q: 2+2?", "\nA: 4"),
        ("<s>Q: 2+2? It is 4.</s>", "Q: 2+2?", " It is 4."),
        ("Q: 1?A: 1<|im_end|>\n<|endoftext|>", "Q: 1?", "A: 1"),
        ("something else", "Q: 2+2?", None),
    ],
)
def test_openrlhf_queries_split_into_the_response_after_the_prompt(
    query: str, prompt: str, expected: str | None
) -> None:
    assert split_completion(query, prompt, ["<|im_end|>", "<|endoftext|>", "</s>"]) == expected


def test_scoring_options_mirror_every_scoring_config_field_and_refuse_others() -> None:
    assert set(ScoringOptions.model_fields) == set(ScoringConfig.model_fields)
    assert ScoringOptions.model_validate({"watermark": "gain"}).model_dump(exclude_unset=True) == {
        "watermark": "gain"
    }
    with pytest.raises(ValidationError):
        ScoringOptions.model_validate({"temperature": 1})


def test_an_annotate_request_takes_exactly_one_of_trace_and_traces() -> None:
    trace = {"id": "a", "question": "q", "completion": "c", "reference_answer": "1"}
    assert AnnotateRequest.model_validate({"trace": trace}).field_name == "trace"
    assert len(AnnotateRequest.model_validate({"traces": [trace, trace]}).trace_list) == 2
    for body in ({}, {"trace": trace, "traces": [trace]}, {"traces": []}):
        with pytest.raises(ValidationError):
            AnnotateRequest.model_validate(body)
    with pytest.raises(ValidationError, match="equal lengths"):
        OpenRLHFRewardRequest.model_validate({"query": ["a"], "prompts": [], "labels": []})


def test_settings_come_from_mig_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIG_PORT", "9001")
    monkeypatch.setenv("MIG_PROBE__THREADS", "3")
    monkeypatch.setenv("MIG_SCORING__WATERMARK", "gain")
    monkeypatch.setenv("MIG_API_KEYS", '{"trainer-a": "sk-1"}')
    monkeypatch.setenv("MIG_CORS_ORIGINS", '["https://a.example"]')
    monkeypatch.setenv("MIG_EXACT_BATCHING", "false")
    settings = ServiceSettings()
    assert settings.port == 9001 and settings.probe.threads == 3 and settings.scoring.watermark == "gain"
    assert settings.api_key_ids() == {"sk-1": "trainer-a"}
    assert "sk-1" not in repr(settings)
    assert settings.cors_origins == ["https://a.example"] and settings.exact is False


def test_exact_batching_defaults_to_exact_for_the_embedded_probe_only() -> None:
    assert ServiceSettings().exact is True
    assert ServiceSettings(probe={"backend": "vllm-server"}).exact is False
    assert ServiceSettings(probe={"backend": "vllm-server"}, exact_batching=True).exact is True


def test_settings_refuse_a_queue_smaller_than_one_request() -> None:
    with pytest.raises(ValidationError, match="queue_max_traces"):
        ServiceSettings(queue_max_traces=8, max_traces_per_request=16)


def test_error_locations_read_as_field_paths() -> None:
    assert field_path(("body", "traces", 3, "steps", 0)) == "traces[3].steps[0]"
    assert field_path(("body",)) == "body"
    assert field_path(("config", "prompt", "header")) == "config.prompt.header"
