"""A rollout with no reasoning text (the policy stopped at once, or wrote only whitespace) is not a trace
(the service refuses it with a 422): the trainer adapters give it zero reward without sending it, instead of
failing the whole batch."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from mig_annotator.client import MigClient, MigRewardManager, compute_score, trl_reward_function
from tests.client.test_trainer_adapters import POLICY_TOKENIZER, _verl_batch
from tests.service.support import small_traces


def test_trl_gives_empty_completions_zero_and_scores_the_rest(client: MigClient) -> None:
    traces = small_traces(3, prefix="trl-empty-")
    reward = trl_reward_function(client, reward="mixed", lam=0.5, answer_column="answer")
    rewards = reward(
        prompts=[t.question for t in traces] + ["q?", "q?"],
        completions=[t.completion for t in traces] + ["", [{"role": "assistant", "content": " \n"}]],
        answer=[t.reference_answer for t in traces] + ["1", "2"],
    )
    expected = [a.outcome + 0.5 * a.process_reward for a in client.annotate(traces)]
    assert rewards == [*expected, 0.0, 0.0]
    assert reward(prompts=["q?"], completions=["   "], answer=["1"]) == [0.0]


def test_verl_compute_score_gives_an_empty_solution_zero(service_url: str) -> None:
    result = compute_score("openai/gsm8k", "  ", "5", {"question": "What is 2 + 3?"}, base_url=service_url)
    assert result == {"score": 0.0, "outcome": 0.0, "process_reward": 0.0, "failed": 0.0}


def test_verl_reward_manager_gives_an_empty_response_a_zero_row(client: MigClient) -> None:
    tokenizer: Any = AutoTokenizer.from_pretrained(POLICY_TOKENIZER, local_files_only=True)
    traces = small_traces(2, prefix="verl-empty-")
    data, _ = _verl_batch(tokenizer, traces)
    full = MigRewardManager(tokenizer, client=client)(data, return_dict=True)
    eos = tokenizer.eos_token_id
    data.batch["responses"][1, :] = tokenizer.pad_token_id or 0
    data.batch["responses"][1, 0] = eos  # the policy stopped at once: only the end-of-text token
    width = data.batch["prompts"].shape[-1]
    data.batch["attention_mask"][1, width + 1 :] = 0
    result = MigRewardManager(tokenizer, client=client)(data, return_dict=True)
    assert torch.equal(result["reward_tensor"][0], full["reward_tensor"][0])
    assert torch.all(result["reward_tensor"][1] == 0)
    info = result["reward_extra_info"]
    assert info["outcome"][1] == 0.0 and info["process_reward"][1] == 0.0 and info["steps"][1] == 0.0
    assert info["outcome"][0] == full["reward_extra_info"]["outcome"][0]


@pytest.mark.parametrize("completion", ["", " \t\n"])
def test_the_service_itself_still_refuses_them_naming_the_field(client: MigClient, completion: str) -> None:
    from mig_annotator.client import MigServiceError

    bad = {"id": "e", "question": "q", "completion": completion, "reference_answer": "1"}
    with pytest.raises(MigServiceError) as caught:
        client.annotate([bad])
    assert caught.value.status == 422 and caught.value.fields == ["traces[0].completion"]
