"""verl 0.9 takes our rewards, against the real package (run in .venv-verl: `make test-verl`).

Real ``verl.DataProto`` batches built from tokenised GSM8K rollouts
(tests/fixtures/gsm8k_rollouts_small.jsonl, SmolLM2's tokenizer as the policy's), verl's own registries
and loaders, and a live reward service started from the main venv (a subprocess over the deterministic
fake probe: this venv has no engine).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

verl = pytest.importorskip("verl", reason="verl runs in its own venv: make test-verl")
torch = pytest.importorskip("torch")

from omegaconf import OmegaConf  # noqa: E402

from mig_annotator.client import TraceFailure  # noqa: E402
from mig_annotator.client.verl import MigRewardManager, register_verl_reward_manager, token_rewards  # noqa: E402
from tests.verl.support import (  # noqa: E402
    ROOT,
    expected_annotations,
    gsm8k_batch,
    loop_config,
    reward_loop,
    rollouts,
)


def test_verl_resolves_and_builds_our_manager_through_its_own_loader(
    service_url: str, tokenizer: Any
) -> None:
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
    from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls

    from mig_annotator.client.verl_reward_loop import MigRewardLoopManager

    config = loop_config(service_url)
    assert resolve_reward_manager_cls(config) is MigRewardLoopManager
    assert get_reward_manager_cls("mig") is MigRewardLoopManager  # registered under "mig" on import
    manager = load_reward_manager(config, tokenizer)
    assert isinstance(manager, MigRewardLoopManager)


def test_the_reward_loop_puts_step_rewards_on_step_ends_and_the_outcome_on_the_answer(
    service_url: str, tokenizer: Any
) -> None:
    from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls

    rows = rollouts()
    data = gsm8k_batch(tokenizer, rows)
    config = loop_config(service_url)
    manager_cls = resolve_reward_manager_cls(config)
    rm_scores, outputs = reward_loop(manager_cls, load_reward_manager(config, tokenizer), data)
    annotations = expected_annotations(service_url, rows, tokenizer, data)
    width = data.batch["prompts"].shape[1]
    assert rm_scores.shape == data.batch["responses"].shape and rm_scores.dtype == torch.float32
    for i, (row, annotation) in enumerate(zip(rows, annotations, strict=True)):
        length = int(data.batch["attention_mask"][i, width:].sum())
        ids = data.batch["responses"][i, :length].tolist()
        row_scores = rm_scores[i]
        assert torch.all(row_scores[length:] == 0)
        expected = token_rewards(tokenizer, ids, annotation)
        assert row_scores[:length].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
        assert float(row_scores.sum()) == pytest.approx(
            annotation.outcome + annotation.process_reward, abs=1e-5
        )
        # each r_k on the token where the decoded text first reaches the end of step k's span; the outcome
        # on the token where it first reaches the end of the extracted answer
        reach = [len(tokenizer.decode(ids[: t + 1], skip_special_tokens=True)) for t in range(length)]

        def token_ending(char_end: int, reach: list[int] = reach) -> int:
            return next(t for t, size in enumerate(reach) if size >= char_end)

        for step in annotation.steps:
            if step.reward > 0:
                assert float(row_scores[token_ending(step.span.end)]) >= step.reward - 1e-6
        if annotation.outcome and annotation.answer_span is not None:
            outcome_at = token_ending(annotation.answer_span.end)
            assert float(row_scores[outcome_at]) >= 1.0 - 1e-6
            assert outcome_at == max(t for t in range(length) if row_scores[t] != 0)
        assert (row_scores[:length] != 0).sum() <= len(annotation.steps) + 1
        info = outputs[i]["reward_extra_info"]
        assert info["outcome"] == float(annotation.outcome) == float(row["is_correct"])
        assert info["failed"] == 0.0
        assert float(outputs[i]["reward_score"]) == pytest.approx(
            annotation.outcome + annotation.process_reward, abs=1e-5
        )


def test_each_sample_of_the_reward_loop_sends_verls_uid_as_its_group_id(
    service_url: str, tokenizer: Any
) -> None:
    import httpx

    from mig_annotator.client import AsyncMigClient
    from mig_annotator.client.verl_reward_loop import MigRewardLoopManager
    from tests.client.support import RecordingProxy

    rows = rollouts()
    data = gsm8k_batch(tokenizer, rows)
    proxy = RecordingProxy(service_url)
    client = AsyncMigClient(
        "http://mig.test", http_client=httpx.AsyncClient(transport=httpx.MockTransport(proxy))
    )
    manager = MigRewardLoopManager(loop_config(service_url), tokenizer, client=client)
    _, outputs = reward_loop(MigRewardLoopManager, manager, data)
    assert len(proxy.sent) == len(rows) and all(out["reward_extra_info"]["failed"] == 0.0 for out in outputs)
    sent = sorted((trace["question"], trace["group_id"]) for trace in proxy.sent)
    assert sent == sorted((row["question"], f"uid-{row['question_id']}") for row in rows)


def test_the_legacy_manager_through_verls_registry_gives_the_same_tensor(
    service_url: str, tokenizer: Any
) -> None:
    from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls
    from verl.workers.reward_manager import get_reward_manager_cls

    register_verl_reward_manager("mig")
    assert get_reward_manager_cls("mig") is MigRewardManager
    rows = rollouts()
    data = gsm8k_batch(tokenizer, rows)
    manager = get_reward_manager_cls("mig")(tokenizer, num_examine=0, base_url=service_url)
    legacy = manager(data, return_dict=True)
    config = loop_config(service_url)
    rm_scores, _ = reward_loop(
        resolve_reward_manager_cls(config), load_reward_manager(config, tokenizer), data
    )
    assert torch.allclose(legacy["reward_tensor"], rm_scores, atol=1e-6)
    assert legacy["reward_extra_info"]["outcome"] == [float(r["is_correct"]) for r in rows]


def test_compute_score_loads_as_verls_custom_reward_function(service_url: str) -> None:
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": str(ROOT / "client" / "verl.py"),
                    "name": "compute_score",
                    "reward_kwargs": {"base_url": service_url, "reward": "outcome"},
                }
            }
        }
    )
    compute_score = get_custom_reward_fn(config)
    row = rollouts()[0]
    result = compute_score(
        data_source="openai/gsm8k",
        solution_str=row["completion"],
        ground_truth=row["reference_answer"],
        extra_info={"question": row["question"]},
    )
    assert result["score"] == result["outcome"] == float(row["is_correct"])
    assert result["failed"] == 0.0


def test_a_service_that_is_down_gives_the_fallback_on_the_last_token_when_asked(tokenizer: Any) -> None:
    import socket

    from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    rows = rollouts()[:2]
    data = gsm8k_batch(tokenizer, rows)
    config = loop_config(dead, fallback_reward=-1.0, on_service_down="fallback", max_retries=0)
    manager = load_reward_manager(config, tokenizer)
    with pytest.warns(RuntimeWarning, match="unavailable"):
        rm_scores, outputs = reward_loop(resolve_reward_manager_cls(config), manager, data)
    width = data.batch["prompts"].shape[1]
    for i in range(len(rows)):
        length = int(data.batch["attention_mask"][i, width:].sum())
        assert float(rm_scores[i, length - 1]) == -1.0 and float(rm_scores[i].abs().sum()) == 1.0
        assert outputs[i]["reward_extra_info"]["failed"] == 1.0
    assert manager.fallback.stats()["mig/service_down_calls"] == 2.0
    raising = load_reward_manager(loop_config(dead, max_retries=0), tokenizer)
    from mig_annotator.client import MigServiceUnavailable

    with pytest.raises(MigServiceUnavailable):
        reward_loop(resolve_reward_manager_cls(config), raising, data)
    assert TraceFailure  # the per-trace failure type the manager turns into the fallback


def test_with_mig_decoupled_each_rm_scores_row_is_the_samples_credit_record(
    service_url: str, tokenizer: Any
) -> None:
    from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls

    from mig_annotator.client.verl_credit import SCORED, decode_credit
    from mig_annotator.schemas.token_alignment import align_annotation, token_offsets

    rows = rollouts()
    data = gsm8k_batch(tokenizer, rows)
    config = loop_config(service_url, estimator="mig_decoupled")
    manager = load_reward_manager(config, tokenizer)
    assert manager.credit == "record"
    rm_scores, outputs = reward_loop(resolve_reward_manager_cls(config), manager, data)
    annotations = expected_annotations(service_url, rows, tokenizer, data)
    width = data.batch["prompts"].shape[1]
    for i, annotation in enumerate(annotations):
        length = int(data.batch["attention_mask"][i, width:].sum())
        ids = data.batch["responses"][i, :length].tolist()
        assert torch.all(rm_scores[i, length:] == 0)
        record = decode_credit(rm_scores[i].numpy(), length, where=f"row {i}")
        alignment = align_annotation(annotation, token_offsets(tokenizer, ids, annotation.completion))
        assert record.status == SCORED and record.outcome == float(annotation.outcome)
        expected_rewards = np.array([step.reward for step in annotation.steps], dtype=np.float32)
        assert record.step_rewards.tolist() == expected_rewards.tolist()
        assert record.step_end_tokens.tolist() == alignment.step_end_tokens.tolist()
        assert len(record.step_end_tokens) == len(annotation.steps) > 0
        assert record.cot_mask.tolist() == alignment.cot_mask.tolist() and record.cot_mask.any()
        assert record.completion_mask.tolist() == alignment.completion_mask.tolist()
        assert outputs[i]["reward_extra_info"]["outcome"] == float(annotation.outcome)


def test_a_sample_the_service_cannot_score_is_a_not_scored_record(tokenizer: Any) -> None:
    import socket

    from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls

    from mig_annotator.client.verl_credit import NOT_SCORED, decode_credit

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    data = gsm8k_batch(tokenizer, rollouts()[:2])
    config = loop_config(dead, estimator="mig_decoupled", on_service_down="fallback", max_retries=0)
    with pytest.warns(RuntimeWarning, match="unavailable"):
        rm_scores, _ = reward_loop(
            resolve_reward_manager_cls(config), load_reward_manager(config, tokenizer), data
        )
    width = data.batch["prompts"].shape[1]
    for i in range(2):
        length = int(data.batch["attention_mask"][i, width:].sum())
        record = decode_credit(rm_scores[i].numpy(), length)
        assert record.outcome is None and record.status == NOT_SCORED


def test_a_summing_estimator_gets_one_warning_naming_mig_decoupled(
    service_url: str, tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from verl.trainer.ppo.reward import load_reward_manager

    from mig_annotator.client import verl_reward_loop

    verl_reward_loop._warned.clear()
    with caplog.at_level("WARNING", logger="mig_annotator.client.verl_reward_loop"):
        first = load_reward_manager(loop_config(service_url, estimator="grpo"), tokenizer)
        load_reward_manager(loop_config(service_url, estimator="grpo"), tokenizer)
        load_reward_manager(loop_config(service_url, estimator="mig_decoupled"), tokenizer)
        load_reward_manager(loop_config(service_url, estimator="gae"), tokenizer)
    warnings = [r for r in caplog.records if r.name == "mig_annotator.client.verl_reward_loop"]
    assert len(warnings) == 1 and first.credit == "tokens"
    message = warnings[0].getMessage()
    assert "adv_estimator=grpo" in message and "collapses the per-step MIG credit" in message
    assert "mig_decoupled" in message
