"""What trainers need when things go wrong: per-trace failures become fallback rewards, busy and down
services are retried within a deadline, and GRPO-sized batches are split to fit the service.

Real sockets throughout: a live fake-probe service, a scripted HTTP server in front of it (503/429/504,
hangs), and a port nothing listens on.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mig_annotator.client import (
    AsyncMigClient,
    MigClient,
    MigServiceError,
    MigServiceUnavailable,
    TraceFailure,
)
from mig_annotator.client.fallback import RewardFallback
from mig_annotator.client.trl import async_trl_reward_function, trl_reward_function
from mig_annotator.schemas import TraceAnnotation
from mig_annotator.schemas.scalar import scalar_reward
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.client.scripted_server import Script, free_port, scripted_server
from tests.client.support import fake_probe
from tests.service.support import live_server, small_traces

LONG = "We add the numbers " + "one and then another " * 30 + "together.\nA: 5"


@pytest.fixture(scope="module")
def limited_url(_service_environment_cleared: None) -> Iterator[str]:
    """Token limit 400 (the fake probe's tokenizer: one token per character), 64 traces a request."""
    settings = ServiceSettings(
        max_tokens_per_trace=400, max_traces_per_request=64, queue_max_traces=128, audit_enabled=False
    )
    with live_server(create_app(settings, probe=fake_probe())) as url:
        yield url


def good_and_long() -> list[dict[str, Any]]:
    good = small_traces(3, prefix="g-")[1].model_dump(mode="json")
    return [good, {**good, "id": "long", "completion": LONG}]


def test_a_bad_trace_gets_its_failure_in_place_and_the_good_one_its_annotation(limited_url: str) -> None:
    with MigClient(limited_url, max_traces_per_request=1) as client:  # one trace a request: indices remapped
        good, failure = client.annotate_results(good_and_long())
        (alone,) = client.annotate([good_and_long()[0]])
        with pytest.raises(MigServiceError) as caught:
            client.annotate(good_and_long())
    assert isinstance(good, TraceAnnotation) and good == alone
    assert isinstance(failure, TraceFailure)
    assert (failure.index, failure.field, failure.code) == (1, "traces[1].completion", "invalid_trace")
    assert (caught.value.status, caught.value.fields) == (422, ["traces[1].completion"])


def test_trl_functions_give_a_bad_completion_the_fallback_and_count_it(limited_url: str) -> None:
    prompts = [t["question"] for t in good_and_long()]
    completions = [t["completion"] for t in good_and_long()]
    answers = [t["reference_answer"] for t in good_and_long()]
    with MigClient(limited_url) as client:
        (expected,) = client.annotate([good_and_long()[0]])
        sync_func = trl_reward_function(client, fallback=RewardFallback(reward=-1.0))
        sync_rewards = sync_func(prompts=prompts, completions=completions, answer=answers)
    async_func = async_trl_reward_function(
        fallback=RewardFallback(reward=-1.0), client_options={"base_url": limited_url}
    )
    async_rewards = asyncio.run(async_func(prompts=prompts, completions=completions, answer=answers))
    assert sync_rewards == async_rewards == [scalar_reward(expected, "mixed", 1.0), -1.0]
    for func in (sync_func, async_func):
        assert func.fallback.stats() == {  # type: ignore[attr-defined]
            "mig/failed_traces": 1.0,
            "mig/service_down_calls": 0.0,
            "mig/fallback_rewards": 1.0,
        }


def test_trl_functions_can_give_unscorable_completions_nan_which_trl_leaves_out(limited_url: str) -> None:
    prompts = [t["question"] for t in good_and_long()] + ["q?"]
    completions = [t["completion"] for t in good_and_long()] + ["  \n"]  # the last one has no text
    answers = [t["reference_answer"] for t in good_and_long()] + ["1"]
    with MigClient(limited_url) as client:
        (expected,) = client.annotate([good_and_long()[0]])
        sync_func = trl_reward_function(client, on_failure="nan")
        sync_rewards = sync_func(prompts=prompts, completions=completions, answer=answers)
    async_func = async_trl_reward_function(on_failure="nan", client_options={"base_url": limited_url})
    async_rewards = asyncio.run(async_func(prompts=prompts, completions=completions, answer=answers))
    for rewards in (sync_rewards, async_rewards):
        assert rewards[0] == scalar_reward(expected, "mixed", 1.0)
        assert math.isnan(rewards[1]) and math.isnan(rewards[2])
    for func in (sync_func, async_func):
        assert func.fallback.stats()["mig/failed_traces"] == 1.0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"fallback reward is -1\.0"):
        trl_reward_function(fallback=RewardFallback(-1.0), on_failure="nan")
    with pytest.raises(ValueError, match="on_failure must be one of"):
        async_trl_reward_function(on_failure="zero")  # type: ignore[arg-type]


def test_trl_nan_option_gives_every_completion_nan_when_the_service_is_down_and_fallback_is_chosen() -> None:
    policy = RewardFallback(on_service_down="fallback")
    with MigClient(f"http://127.0.0.1:{free_port()}", max_retries=0, deadline_s=5) as client:
        func = trl_reward_function(client, fallback=policy, on_failure="nan")
        with pytest.warns(RuntimeWarning, match="unavailable"):
            rewards = func(prompts=["q", "q"], completions=["A: 1", "A: 2"], answer=["1", "1"])
    assert len(rewards) == 2 and all(math.isnan(reward) for reward in rewards)
    assert policy.stats()["mig/fallback_rewards"] == 2.0


def test_429_and_503_are_retried_after_the_retry_after_the_server_gave(limited_url: str) -> None:
    script = Script(limited_url, [(429, {"Retry-After": "1"}), (503, {"Retry-After": "1"})])
    with scripted_server(script) as url, MigClient(url) as client:
        annotations = client.annotate(small_traces(2))
    assert [a.trace_id for a in annotations] == ["t0", "t1"]
    gaps = [later - earlier for earlier, later in zip(script.arrivals, script.arrivals[1:], strict=False)]
    assert len(gaps) == 2 and min(gaps) >= 1.0  # each retry waited at least the Retry-After


def test_a_service_that_stays_busy_raises_unavailable_or_gives_the_fallback(limited_url: str) -> None:
    faults = [(503, {"Retry-After": "0"})] * 6
    script = Script(limited_url, list(faults))
    with scripted_server(script) as url, MigClient(url, max_retries=2) as client:
        with pytest.raises(MigServiceUnavailable) as caught:
            client.annotate(small_traces(1))
        assert caught.value.status == 503 and len(script.sizes) == 3  # the first try and 2 retries
        policy = RewardFallback(reward=0.5, on_service_down="fallback")
        func = trl_reward_function(client, fallback=policy)
        with pytest.warns(RuntimeWarning, match="unavailable"):
            rewards = func(prompts=["q", "q"], completions=["A: 1", "A: 2"], answer=["1", "1"])
    assert rewards == [0.5, 0.5]
    assert policy.stats()["mig/service_down_calls"] == 1.0
    assert policy.stats()["mig/fallback_rewards"] == 2.0


def test_a_service_that_is_down_raises_unavailable_by_default() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with MigClient(url, max_retries=1) as client, pytest.raises(MigServiceUnavailable) as caught:
        client.annotate(small_traces(1))
    assert (caught.value.status, caught.value.error) == (0, "unreachable")
    func = trl_reward_function(MigClient(url, max_retries=0))
    with pytest.raises(MigServiceUnavailable):
        func(prompts=["q"], completions=["A: 1"], answer=["1"])


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_hanging_service_ends_at_the_client_deadline(limited_url: str, asynchronous: bool) -> None:
    script = Script(limited_url, [("hang", 8.0)])
    with scripted_server(script) as url:
        started = time.monotonic()
        with pytest.raises(MigServiceUnavailable) as caught:
            if asynchronous:

                async def call() -> None:
                    async with AsyncMigClient(url, deadline_s=1.5) as client:
                        await client.annotate(small_traces(1))

                asyncio.run(call())
            else:
                with MigClient(url, deadline_s=1.5) as client:
                    client.annotate(small_traces(1))
        elapsed = time.monotonic() - started
    assert caught.value.error == "client_deadline"
    assert elapsed < 6.0  # the client deadline holds: well before the 8 s hang ends (generous for load)


def test_traces_a_504_or_the_service_deadline_left_unfinished_are_sent_again(limited_url: str) -> None:
    traces = small_traces(4, prefix="r-")
    script = Script(limited_url, [(504, {}), ("late", [1])])
    with scripted_server(script) as url, MigClient(url) as client:
        annotations = client.annotate(traces)
    assert [a.trace_id for a in annotations] == ["r-0", "r-1", "r-2", "r-3"]
    # all 4 (answered 504), again in requests of half the size (r-1 left unfinished), then r-1 alone
    assert script.sizes == [4, 2, 2, 1]


def test_a_grpo_sized_batch_is_split_to_the_service_limits_and_comes_back_in_order(limited_url: str) -> None:
    traces = small_traces(520, prefix="grpo-")

    async def call() -> list[TraceAnnotation]:
        async with AsyncMigClient(limited_url) as client:
            return await client.annotate(traces)

    script = Script(limited_url)
    with scripted_server(script) as url, MigClient(url) as client:
        sync_annotations = client.annotate(traces)
    annotations = asyncio.run(call())
    assert [a.trace_id for a in annotations] == [t.id for t in traces]
    assert annotations == sync_annotations
    assert script.sizes == [64] * 8 + [8]  # 64 a request: the service's max_traces_per_request


def test_verl_compute_score_gives_a_bad_trace_the_fallback_and_counts_it(limited_url: str) -> None:
    from mig_annotator.client.verl import compute_score, compute_score_fallback

    before = compute_score_fallback.stats()["mig/failed_traces"]
    result = compute_score(
        "gsm8k", LONG, "5", {"question": "1+4?"}, base_url=limited_url, fallback_reward=-0.5
    )
    assert result == {"score": -0.5, "outcome": 0.0, "process_reward": 0.0, "failed": 1.0}
    assert compute_score_fallback.stats()["mig/failed_traces"] == before + 1
