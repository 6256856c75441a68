"""MigGRPOTrainer: 2 real optimizer steps on the CPU against a live service, per-token credit checked.

The service (127.0.0.1, the embedded SmolLM2 probe, an audit dir) is asked once per batch; the per-token
advantages the trainer used and the SFT gates equal a recomputation from the audit log's rows (outcome,
steps and their spans) through the same token offsets; the logged SFT NLL equals the token-mean NLL of
the completions the audit log gates open, recomputed from the policy's log-probabilities at that step.

The gate-open fixture: two few-shot plain-text prompts ("Q: ... A: 2 + 2 = 4. The answer is 4.") that
SmolLM2-135M continues in the same form, so most sampled completions are one arithmetic step and a correct
"The answer is N." (11 of 16 at temperature 1 in a trial; each with max_k r_k = 1.3 > the default threshold
0). The service really scores every completion; the test fails if none passes both gates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mig_annotator.client import MigClient
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from mig_annotator.trainer.advantages import AdvantageSettings
from tests.service.support import live_server
from tests.trainers.support import PROMPTS, audit_requests, cpu_grpo_config, gate_open_dataset

pytestmark = [pytest.mark.trainers, pytest.mark.model]

KEYS = {"mig-trainer": "sk-mig-trainer-0123456789"}
STEPS = 2


def recording_trainer(**kwargs: Any) -> Any:
    """A MigGRPOTrainer that also keeps, per generation batch, the policy's per-token log-probabilities of
    the sampled completions (a plain forward pass, before the batch's optimizer step) and their masks."""
    import torch

    from mig_annotator.trainer.trl import MigGRPOTrainer

    class Recording(MigGRPOTrainer):
        recorded: list[tuple[Any, Any]]

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
            ids = torch.cat([output["prompt_ids"], completion_ids], dim=1)
            mask = torch.cat([output["prompt_mask"], completion_mask], dim=1)
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask).logits[
                    :, -completion_ids.size(1) - 1 : -1
                ]
                logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, completion_ids.unsqueeze(-1))
            self.recorded.append((logps.squeeze(-1).cpu(), completion_mask.cpu().float()))
            return output

    trainer = Recording(**kwargs)
    trainer.recorded = []
    return trainer


def test_the_subclass_trains_on_per_token_advantages_from_one_call_per_batch(
    tmp_path: Path, default_model_path: Path
) -> None:
    dataset = gate_open_dataset()
    audit_dir = tmp_path / "audit"
    service = ServiceSettings(
        audit_dir=audit_dir, api_keys=KEYS, probe=TransformersProbeSettings(threads=1), audit_flush_s=0.2
    )
    settings = AdvantageSettings(sft_weight=0.5)  # the gate: correct and max_k r_k > 0
    with live_server(create_app(service)) as url, MigClient(url, api_key=KEYS["mig-trainer"]) as client:
        config = cpu_grpo_config(tmp_path / "grpo", STEPS)
        trainer = recording_trainer(
            model=str(default_model_path),
            args=config,
            train_dataset=dataset,
            client=client,
            advantages=settings,
        )
        trainer.train()
    requests = audit_requests(audit_dir, "mig-trainer")
    assert trainer.state.global_step == STEPS
    assert len(requests) == len(trainer.mig_used_advantages) == STEPS  # one service call per batch
    logged = [entry for entry in trainer.state.log_history if "mig/sft_nll" in entry]
    assert len(logged) == STEPS
    opened = process_seen = 0
    for used, gates, request, entry, (logps, mask) in zip(
        trainer.mig_used_advantages, trainer.mig_used_gates, requests, logged, trainer.recorded, strict=True
    ):
        assert used.shape[0] == len(request) == 8
        expected_gates = [
            row["outcome"] == 1 and max(row["step_rewards"], default=0.0) > settings.sft_threshold
            for row in request
        ]
        assert gates == expected_gates
        assert entry["mig/sft_gate_open"] == sum(expected_gates)
        opened += sum(expected_gates)
        # the recomputation: group-normalised outcome and P_i from the audit rows (sequence placement)
        for first in range(0, 8, 4):
            group = request[first : first + 4]
            outcome = group_normalised([float(row["outcome"]) for row in group], settings.eps, 0.0, True)
            process = group_normalised([sum(row["step_rewards"]) for row in group], 0.0, 0.25, False)
            for offset in range(len(group)):
                values = used[first + offset].numpy()
                on_answer = settings.outcome_weight * outcome[offset]
                on_cot = on_answer + settings.process_weight * process[offset]
                trained = values != 0
                for value in values[trained]:
                    assert np.isclose(value, on_cot, atol=1e-5) or np.isclose(value, on_answer, atol=1e-5)
                if not np.isclose(on_cot, on_answer, atol=1e-5):
                    process_seen += int(np.isclose(values, on_cot, atol=1e-5).sum() > 0)
        # the SFT term: token-mean NLL over the completions the audit log gates open
        gated = [index for index, gate in enumerate(expected_gates) if gate]
        if gated:
            expected_nll = -float((logps[gated] * mask[gated]).sum() / mask[gated].sum())
            assert expected_nll > 0.0
            assert entry["mig/sft_nll"] == pytest.approx(expected_nll, rel=1e-4, abs=1e-5)
        else:
            assert entry["mig/sft_nll"] == 0.0
    assert opened >= 1  # the fixture: at least one completion passed both gates, so the SFT term ran
    assert process_seen >= 1  # process credit on CoT tokens, apart from the outcome


def group_normalised(values: list[float], eps: float, floor: float, outcome: bool) -> list[float]:
    """GRPO's rule, written out: (x - mean) / (std + eps) for the outcome, / max(std, floor) for P_i."""
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    scale = std + eps if outcome else max(std, floor)
    return [(v - mean) / scale for v in values]


def test_with_the_policy_as_its_own_probe_the_trainer_scores_in_process_with_the_weights_that_generated(
    tmp_path: Path, default_model_path: Path
) -> None:
    """probe="policy": no service; batch 1's values equal the engine on the same weights loaded from their
    folder (the policy before its first optimizer step), and every batch names the step it was scored at."""
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe.transformers_probe import TransformersProbe
    from mig_annotator.schemas import Trace
    from mig_annotator.trainer.trl import MigGRPOTrainer

    dataset = gate_open_dataset()
    trainer = MigGRPOTrainer(
        model=str(default_model_path),
        args=cpu_grpo_config(tmp_path / "grpo", STEPS),
        train_dataset=dataset,
        probe="policy",
        advantages=AdvantageSettings(sft_weight=0.5),
    )
    trainer.train()
    assert trainer.state.global_step == STEPS and len(trainer.mig_annotations) == STEPS
    for step, batch in enumerate(trainer.mig_annotations):
        assert len(batch) == 8 and all(a is not None for a in batch)
        assert {a.probe_model for a in batch} == {f"policy@{step}"}  # type: ignore[union-attr]
    assert trainer.model.training  # scoring put the train mode back
    first = [a for a in trainer.mig_annotations[0] if a is not None]
    candidates = [
        Trace(id=f"{i}-{j}", question=question, completion=a.completion, reference_answer=answer)
        for i, a in enumerate(first)
        for j, (question, answer) in enumerate(PROMPTS)
    ]
    with Annotator(TransformersProbe(TransformersProbeSettings(model=str(default_model_path)))) as engine:
        folder = engine.annotate(candidates)
    for i, live in enumerate(first):
        # the prompt it was sampled for: the one whose v_0 (the question alone) matches
        matches = [f for f in folder[2 * i : 2 * i + 2] if abs(f.v0 - live.v0) < 1e-5]
        assert len(matches) == 1, (live.v0, [f.v0 for f in folder[2 * i : 2 * i + 2]])
        expected = matches[0]
        assert live.outcome == expected.outcome and len(live.steps) == len(expected.steps)
        for got, want in zip(live.steps, expected.steps, strict=True):
            assert abs(got.v - want.v) < 1e-5 and abs(got.reward - want.reward) < 1e-5


def test_the_probe_choice_is_checked_before_training(tmp_path: Path, default_model_path: Path) -> None:
    from mig_annotator.trainer.trl import MigGRPOTrainer

    dataset = gate_open_dataset()
    common = {
        "model": str(default_model_path),
        "args": cpu_grpo_config(tmp_path / "g", 1),
        "train_dataset": dataset,
    }
    with pytest.raises(ValueError, match="pass client=MigClient"):
        MigGRPOTrainer(**common)
    with pytest.raises(ValueError, match="pass no client"):
        MigGRPOTrainer(**common, probe="policy", client=MigClient("http://127.0.0.1:9"))
    with pytest.raises(ValueError, match=r"has none: set GRPOConfig\(beta=\.\.\.\) above 0"):
        MigGRPOTrainer(**common, probe="reference")
