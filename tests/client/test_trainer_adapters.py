"""The Python clients, the TRL reward function and the verl adapters, against a live service (fake probe)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from mig_annotator.client import (
    AsyncMigClient,
    MigClient,
    MigRewardManager,
    MigServiceError,
    compute_score,
    trl_reward_function,
)
from mig_annotator.client.verl import trace_of_sample
from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.trace import MAX_GROUP_ID_CHARS
from tests.client.support import RecordingProxy
from tests.service.support import small_traces

POLICY_TOKENIZER = Path(__file__).resolve().parents[2] / "bench" / "assets" / "smollm2-tokenizer"


@pytest.fixture(scope="module")
def policy_tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(POLICY_TOKENIZER, local_files_only=True)


def test_the_sync_client_splits_large_groups_and_keeps_their_order(
    two_per_request_url: str, client: MigClient
) -> None:
    traces = small_traces(5, prefix="chunk-")
    with MigClient(two_per_request_url) as small:
        assert small.info().limits.max_traces_per_request == 2
        chunked = small.annotate(traces)
    assert [a.trace_id for a in chunked] == [t.id for t in traces]
    assert chunked == client.annotate(traces)  # same numbers from a server that takes them all at once


def test_the_async_client_sends_chunks_concurrently_with_the_same_results(
    two_per_request_url: str, client: MigClient
) -> None:
    traces = small_traces(5, prefix="chunk-")

    async def run() -> list[TraceAnnotation]:
        async with AsyncMigClient(two_per_request_url) as async_client:
            return await async_client.annotate(traces, config={"watermark": "gain"})

    assert asyncio.run(run()) == client.annotate(traces, config={"watermark": "gain"})


def test_client_errors_carry_status_code_and_fields(client: MigClient) -> None:
    bad = {"id": "bad", "question": "q", "completion": "c", "reference_answer": "1", "colour": "red"}
    with pytest.raises(MigServiceError) as caught:
        client.annotate([bad])
    assert caught.value.status == 422
    assert caught.value.error == "invalid_trace"  # the service answers a trace's bad field as its error
    assert caught.value.fields == ["traces[0].colour"]


def test_trl_reward_function_returns_one_float_per_completion(client: MigClient) -> None:
    traces = small_traces(4, prefix="trl-")
    reward = trl_reward_function(client, reward="mixed", lam=0.5, answer_column="answer")
    assert reward.__name__ == "mig_mixed"
    # GRPOTrainer's call: keyword arguments, dataset columns as lists, plus trainer_state and completion_ids
    rewards = reward(
        prompts=[t.question for t in traces],
        completions=[t.completion for t in traces],
        completion_ids=[[1, 2, 3]] * 4,
        answer=[t.reference_answer for t in traces],
        trainer_state=None,
    )
    expected = client.annotate(traces)
    assert isinstance(rewards, list) and len(rewards) == 4 and all(isinstance(r, float) for r in rewards)
    assert rewards == [a.outcome + 0.5 * a.process_reward for a in expected]


def test_trl_reward_function_reads_conversational_batches_and_transforms_references(
    client: MigClient,
) -> None:
    traces = small_traces(3, prefix="chat-")
    outcome = trl_reward_function(
        client,
        reward="outcome",
        answer_column="solution",
        reference_transform=lambda s: s.split("####")[-1].strip(),
    )
    process = trl_reward_function(
        client,
        reward="process",
        answer_column="solution",
        reference_transform=lambda s: s.split("####")[-1].strip(),
    )
    batch: dict[str, Any] = {
        "prompts": [
            [{"role": "system", "content": "Solve it."}, {"role": "user", "content": t.question}]
            for t in traces
        ],
        "completions": [[{"role": "assistant", "content": t.completion}] for t in traces],
        "solution": [f"Add them.\n#### {t.reference_answer}" for t in traces],
        "trainer_state": None,
    }
    expected = client.annotate(traces)
    assert outcome(**batch) == [float(a.outcome) for a in expected] == [0.0, 1.0, 1.0]
    assert process(**batch) == [a.process_reward for a in expected]


def test_trl_sends_the_completions_of_a_prompt_with_one_question_and_no_group_id(service_url: str) -> None:
    """TRL gives no group label; a prompt's num_generations completions come one after another with the
    same question text, which the service's batcher groups by when a trace has no group id."""
    traces = small_traces(2, prefix="trl-group-")
    prompts = [traces[0].question] * 2 + [traces[1].question] * 2  # num_generations=2
    completions = [traces[0].completion] * 2 + [traces[1].completion] * 2
    proxy = RecordingProxy(service_url)
    with proxy.client() as client:
        rewards = trl_reward_function(client)(
            prompts=prompts,
            completions=completions,
            answer=[traces[0].reference_answer] * 2 + [traces[1].reference_answer] * 2,
            trainer_state=None,
        )
    assert len(rewards) == 4 and rewards[0] == rewards[1] and rewards[2] == rewards[3]
    assert [trace["question"] for trace in proxy.sent] == prompts
    assert all("group_id" not in trace for trace in proxy.sent)


def test_trl_trace_ids_are_unique_per_run_process_step_and_batch(
    service_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit log tells TRL's traces apart: ids carry a run nonce, the process rank, the global step
    and the batch count, never a bare ``trl-0..n`` that repeats every step."""
    from types import SimpleNamespace

    monkeypatch.setenv("RANK", "3")
    traces = small_traces(2, prefix="trl-ids-")
    batch = {
        "prompts": [t.question for t in traces],
        "completions": [t.completion for t in traces],
        "answer": [t.reference_answer for t in traces],
    }
    proxy = RecordingProxy(service_url)
    with proxy.client() as client:
        first, second = trl_reward_function(client), trl_reward_function(client)
        for step in (7, 7, 8):
            first(**batch, trainer_state=SimpleNamespace(global_step=step))
        second(**batch, trainer_state=SimpleNamespace(global_step=7))
    ids = [trace["id"] for trace in proxy.sent]
    assert len(ids) == 8 and len(set(ids)) == 8
    runs = {trace_id.split("-")[1] for trace_id in ids}
    assert len(runs) == 2 and all(len(run) == 8 for run in runs)  # one nonce per reward function
    assert ["-".join(trace_id.split("-")[2:]) for trace_id in ids] == [
        "p3-s7-b0-0",
        "p3-s7-b0-1",
        "p3-s7-b1-0",
        "p3-s7-b1-1",
        "p3-s8-b2-0",
        "p3-s8-b2-1",
        "p3-s7-b0-0",
        "p3-s7-b0-1",
    ]


def test_trl_reward_function_names_a_missing_answer_column(client: MigClient) -> None:
    reward = trl_reward_function(client)
    with pytest.raises(ValueError, match=r"no column 'answer'.*'ground_truth'"):
        reward(prompts=["q"], completions=["c"], ground_truth=["1"], trainer_state=None)
    with pytest.raises(ValueError, match="reward must be one of"):
        trl_reward_function(client, reward="best")  # type: ignore[arg-type]


def test_verl_compute_score_returns_the_score_and_its_parts(service_url: str, client: MigClient) -> None:
    trace = small_traces(2)[1]
    result = compute_score(
        "openai/gsm8k",
        trace.completion,
        trace.reference_answer,
        {"question": trace.question, "split": "train", "index": 1},
        base_url=service_url,
    )
    (annotation,) = client.annotate([trace])
    assert result == {
        "score": annotation.outcome + annotation.process_reward,
        "outcome": 1.0,
        "process_reward": annotation.process_reward,
        "failed": 0.0,
    }
    with pytest.raises(ValueError, match="extra_info\\['question'\\]"):
        compute_score("openai/gsm8k", trace.completion, "5", {"split": "train"}, base_url=service_url)


@dataclass
class VerlBatch:
    """The two attributes of verl's DataProto that reward managers read (verl itself is not installed)."""

    batch: dict[str, torch.Tensor]
    non_tensor_batch: dict[str, np.ndarray]


def _verl_batch(
    tokenizer: Any, traces: list[Trace], uids: list[str] | None = None
) -> tuple[VerlBatch, list[list[int]]]:
    prompt_ids = [tokenizer(t.question, add_special_tokens=False)["input_ids"] for t in traces]
    eos = tokenizer.eos_token_id
    response_ids = [tokenizer(t.completion, add_special_tokens=False)["input_ids"] + [eos] for t in traces]
    prompt_width, response_width = max(map(len, prompt_ids)), max(map(len, response_ids)) + 3
    pad = tokenizer.pad_token_id or 0
    prompts = torch.full((len(traces), prompt_width), pad)
    responses = torch.full((len(traces), response_width), pad)
    attention = torch.zeros((len(traces), prompt_width + response_width), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        prompts[i, prompt_width - len(p) :] = torch.tensor(p)  # left-padded prompts, as verl has them
        responses[i, : len(r)] = torch.tensor(r)  # right-padded responses
        attention[i, prompt_width - len(p) : prompt_width + len(r)] = 1
    data = VerlBatch(
        batch={"prompts": prompts, "responses": responses, "attention_mask": attention},
        non_tensor_batch={
            "data_source": np.array(["openai/gsm8k"] * len(traces), dtype=object),
            "reward_model": np.array([{"ground_truth": t.reference_answer} for t in traces], dtype=object),
            "extra_info": np.array([{"question": t.question} for t in traces], dtype=object),
        },
    )
    if uids is not None:  # verl's GRPO: one uid per prompt, repeated for its rollouts
        data.non_tensor_batch["uid"] = np.array(uids, dtype=object)
    return data, response_ids


def test_verl_reward_manager_puts_step_rewards_on_step_ends_and_the_outcome_on_the_answer(
    policy_tokenizer: Any, client: MigClient
) -> None:
    tokenizer = policy_tokenizer
    traces = small_traces(3, prefix="verl-")
    data, response_ids = _verl_batch(tokenizer, traces)
    manager = MigRewardManager(
        tokenizer, num_examine=0, client=client, outcome_weight=1.0, process_weight=2.0
    )

    result = manager(data, return_dict=True)

    tensor = result["reward_tensor"]
    assert tensor.shape == data.batch["responses"].shape and tensor.dtype == torch.float32
    annotations = client.annotate(traces)
    for i, (ids, annotation) in enumerate(zip(response_ids, annotations, strict=True)):
        assert annotation.completion == tokenizer.decode(ids, skip_special_tokens=True)
        expected = torch.zeros(tensor.shape[1])
        for step in annotation.steps:
            expected[_first_token_covering(tokenizer, ids, step.span.end)] += 2.0 * step.reward
        assert annotation.answer_span is not None
        expected[_first_token_covering(tokenizer, ids, annotation.answer_span.end)] += annotation.outcome
        assert torch.allclose(tensor[i], expected, atol=1e-6)
        total = annotation.outcome + 2.0 * annotation.process_reward
        assert float(tensor[i].sum()) == pytest.approx(total, abs=1e-5)
        assert torch.all(tensor[i, len(ids) :] == 0)  # nothing on padding
    assert sum(a.process_reward for a in annotations) > 0  # the step placement is exercised
    assert result["reward_extra_info"]["outcome"] == [float(a.outcome) for a in annotations]
    assert torch.equal(manager(data), tensor)


def test_verl_reward_manager_sends_verls_uid_as_the_group_id(policy_tokenizer: Any, service_url: str) -> None:
    traces = small_traces(4, prefix="uid-")
    uids = ["3f1c-uid-a", "3f1c-uid-a", "77be-uid-b", "77be-uid-b"]
    with_uid, _ = _verl_batch(policy_tokenizer, traces, uids)
    without_uid, _ = _verl_batch(policy_tokenizer, traces)
    proxy = RecordingProxy(service_url)
    with proxy.client() as client:
        manager = MigRewardManager(policy_tokenizer, num_examine=0, client=client)
        grouped = manager(with_uid)
        sent_with_uid = list(proxy.sent)
        proxy.sent.clear()
        ungrouped = manager(without_uid)
    assert [trace["group_id"] for trace in sent_with_uid] == uids
    assert [trace["id"] for trace in sent_with_uid] == [f"verl-openai/gsm8k-{i}" for i in range(4)]
    assert all("group_id" not in trace for trace in proxy.sent)  # no uid: the key is not sent at all
    assert torch.equal(grouped, ungrouped)  # the group id never changes a reward


def test_trace_of_sample_takes_the_uid_as_text_and_hashes_an_overlong_one(policy_tokenizer: Any) -> None:
    prompt = policy_tokenizer("What is 1 + 1?", add_special_tokens=False)["input_ids"]
    response = policy_tokenizer("1 + 1 = 2.\nA: 2", add_special_tokens=False)["input_ids"]
    sample: dict[str, Any] = {
        "reward_model": {"ground_truth": "2"},
        "extra_info": {"question": "What is 1 + 1?"},
    }

    def group_id(**extra: Any) -> str | None:
        trace = trace_of_sample(policy_tokenizer, prompt, response, sample | extra, "t")
        assert trace is not None
        return trace.group_id

    assert group_id() is None and group_id(uid=None) is None
    assert group_id(uid=np.str_("3f1c-uid")) == "3f1c-uid"
    assert group_id(uid=np.int64(17)) == "17"
    long_uid = "u" * (MAX_GROUP_ID_CHARS + 1)
    hashed = group_id(uid=long_uid)
    assert hashed is not None and hashed.startswith("sha256:") and hashed == group_id(uid=long_uid)
    assert len(hashed) <= MAX_GROUP_ID_CHARS and hashed != group_id(uid=long_uid + "v")


def _first_token_covering(tokenizer: Any, ids: list[int], char_end: int) -> int:
    """The reference placement: the first token whose decoded prefix reaches ``char_end``."""
    return next(
        t
        for t in range(len(ids))
        if len(tokenizer.decode(ids[: t + 1], skip_special_tokens=True)) >= char_end
    )
