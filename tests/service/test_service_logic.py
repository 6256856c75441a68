"""Pure logic of the service: micro-batch formation, OpenRLHF splitting, scalars, settings, client retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from mig_annotator.schemas.api import AnnotateRequest, OpenRLHFRewardRequest, ScoringOptions
from mig_annotator.schemas.config import ScoringConfig
from mig_annotator.service.batcher import Deliver, MicroBatcher, ScoringJob, group_runs
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
    """Stands in for a PreparedTrace: the batcher reads the token count and the trace's group (its
    ``group_id``, else its question: by default each trace is its own question)."""

    def __init__(
        self, name: str, tokens: int, question: str | None = None, group_id: str | None = None
    ) -> None:
        self.name = name
        self.probe_tokens = tokens
        self.trace = SimpleNamespace(question=question or f"question of {name}", group_id=group_id)


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
    batcher: MicroBatcher, *items: tuple[str, int] | _Prepared, deadline_s: float = 60.0
) -> list[asyncio.Future[Any]]:
    prepared = [item if isinstance(item, _Prepared) else _Prepared(*item) for item in items]
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


@dataclass
class _Outcome:
    batches: list[list[str]]  # the names in each batch the probe ran, in order
    results: list[str]  # each trace's answer (its name) or the name of its exception
    left_queued: int
    dropped: int  # traces counted as dropped (nobody waited for them)


def _batches_of(
    *items: tuple[str, int] | _Prepared, max_tokens: int = 100, cancel: str | None = None
) -> _Outcome:
    """What the worker does with ``items`` queued at once (one request); the trace named ``cancel`` has its
    future cancelled before the worker runs (its request gave up)."""

    async def scenario() -> _Outcome:
        run = _RecordingRun()
        metrics = ServiceMetrics()
        batcher = _batcher(run, max_tokens=max_tokens, max_queue=20, metrics=metrics)
        batcher.start()
        futures = _submit(batcher, *items)
        names = [item.name if isinstance(item, _Prepared) else item[0] for item in items]
        if cancel is not None:
            futures[names.index(cancel)].cancel()
        results = await asyncio.gather(*futures, return_exceptions=True)
        left_queued = batcher.queued
        await batcher.stop()
        return _Outcome(
            run.batches,
            [r if isinstance(r, str) else type(r).__name__ for r in results],
            left_queued,
            int(metrics.dropped_traces._value.get()),
        )

    return asyncio.run(scenario())


def _q(name: str, tokens: int, question: str, group_id: str | None = None) -> _Prepared:
    return _Prepared(name, tokens, question=question, group_id=group_id)


def test_a_group_that_would_overflow_the_batch_goes_whole_into_the_next_one() -> None:
    outcome = _batches_of(
        _q("a", 30, "Q1"), _q("b1", 30, "Q2"), _q("b2", 30, "Q2"), _q("b3", 30, "Q2"), _q("c", 30, "Q3")
    )
    assert outcome.batches == [["a"], ["b1", "b2", "b3"], ["c"]]  # not [a, b1, b2] + [b3, c]
    assert outcome.results == ["a", "b1", "b2", "b3", "c"]
    assert (outcome.left_queued, outcome.dropped) == (0, 0)


def test_traces_of_different_questions_fill_the_budget_as_before() -> None:
    outcome = _batches_of(
        _q("a", 30, "Q1"), _q("b", 30, "Q2"), _q("c", 30, "Q3"), _q("d", 30, "Q4"), _q("e", 30, "Q5")
    )
    assert outcome.batches == [["a", "b", "c"], ["d", "e"]]


def test_an_explicit_group_id_decides_the_group_over_the_question_text() -> None:
    # same group id, different question texts: one group, kept whole
    outcome = _batches_of(
        _q("a", 40, "Q1"), _q("g1", 40, "Q2", "uid-1"), _q("g2", 40, "Q3", "uid-1"), _q("z", 10, "Q4")
    )
    assert outcome.batches == [["a"], ["g1", "g2", "z"]]
    # same question, different group ids: two groups, the budget may end the batch between them
    outcome = _batches_of(
        _q("a", 40, "Q1"),
        _q("g1", 40, "Q2", "uid-1"),
        _q("h1", 40, "Q2", "uid-2"),
        _q("h2", 10, "Q2", "uid-2"),
    )
    assert outcome.batches == [["a", "g1"], ["h1", "h2"]]


def test_a_group_id_equal_to_another_traces_question_is_not_that_question_group() -> None:
    outcome = _batches_of(_q("a", 40, "Q1"), _q("b", 40, "Q2"), _q("c", 40, "Q3", group_id="Q2"))
    assert outcome.batches == [["a", "b"], ["c"]]  # c is not in b's group: nothing was held back


def test_a_group_larger_than_the_budget_is_split_at_the_budget_when_it_starts_the_batch() -> None:
    group = [_q(f"g{i}", 30, "Q", "uid") for i in range(5)]
    assert _batches_of(*group).batches == [["g0", "g1", "g2"], ["g3", "g4"]]
    # after a smaller trace it first moves to a batch of its own, then is split there
    assert _batches_of(_q("a", 30, "Q0"), *group).batches == [["a"], ["g0", "g1", "g2"], ["g3", "g4"]]


def test_a_group_that_fits_exactly_is_not_held_back() -> None:
    outcome = _batches_of(_q("a", 40, "Q1"), _q("b1", 30, "Q2"), _q("b2", 30, "Q2"), _q("c", 10, "Q3"))
    assert outcome.batches == [["a", "b1", "b2"], ["c"]]


def test_a_trace_nobody_waits_for_inside_a_held_back_group_is_still_dropped() -> None:
    outcome = _batches_of(
        _q("a", 40, "Q1"), _q("b1", 40, "Q2"), _q("b2", 40, "Q2"), _q("b3", 40, "Q2"), cancel="b1"
    )
    assert outcome.batches == [["a"], ["b2", "b3"]]  # b1 dropped; b2 + b3 overflow a's batch: held back whole
    assert outcome.results == ["a", "CancelledError", "b2", "b3"]
    assert (outcome.left_queued, outcome.dropped) == (0, 1)


def test_exact_units_are_runs_of_consecutive_traces_of_one_group() -> None:
    loop = asyncio.new_event_loop()
    try:
        jobs = [
            ScoringJob(item, time.monotonic() + 60, loop.create_future())  # type: ignore[arg-type]
            for item in (
                _q("a1", 10, "Q1"),
                _q("a2", 10, "Q1"),
                _q("g1", 10, "Q2", "uid-1"),
                _q("g2", 10, "Q3", "uid-1"),  # the group id decides, not the question
                _q("h1", 10, "Q3", "uid-2"),
                _q("b", 10, "Q4"),
                _q("a3", 10, "Q1"),  # Q1 again, after other traces: a run of its own
            )
        ]
    finally:
        loop.close()
    runs = [[job.prepared.name for job in run] for run in group_runs(jobs)]  # type: ignore[attr-defined]
    assert runs == [["a1", "a2"], ["g1", "g2"], ["h1"], ["b"], ["a3"]]
    assert group_runs([]) == []


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
