"""The quick mode's checks: each arm trained on the advantages its config names (written out here).

* outcome: TRL's one advantage per completion, (o - mean) / (std + 1e-4) of the graded outcomes per group;
  no probe, no process part.
* scalar_mixed: TRL's one advantage per completion from o + lam * sum_k r_k of the engine's annotations.
* decoupled: per token, outcome_weight * A^o on every trained token that is not chain of thought, plus
  process_weight * the placement's process part on the CoT tokens (sequence: the floored group-normalised
  P_i, constant over the CoT; step: the sum of the floored, group-normalised r_k of the steps ending at or
  after the token); the SFT gates are "correct and max_k r_k > threshold", and the logged SFT NLL is > 0
  in a batch with an open gate when sft_weight > 0, and 0 everywhere when sft_weight = 0. The annotations
  name the probe: ``reference`` (frozen) or ``policy@STEP``.
* the controls (decoupled, ``process_reward`` oracle / placebo): the annotations trained on keep the
  probe's steps, spans and outcome; oracle: each step's reward is the task's grading of that step
  (task.oracle_step_rewards of the prompt's problem); placebo: the batch's rewards are a permutation of the
  probe's (the same multiset), in another assignment where the rewards are not all equal.

Every check raises ``AssertionError`` naming the arm, batch and row; :func:`check_arm` returns counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from experiment_config import ArmSpec, ExperimentConfig


def _normalised(values: list[float], eps: float = 0.0, floor: float = 0.0) -> list[float]:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    scale = max(std, floor) + eps
    return [float(v) for v in (array - array.mean()) / (scale if scale > 0 else 1.0)]


def check_arm(arm: ArmSpec, config: ExperimentConfig, trainer: Any) -> dict[str, Any]:
    batches = trainer.recorder.batches
    assert batches, f"{arm.name}: no generation batch was recorded"
    size = config.training.generations_per_prompt
    counts = {"batches": len(batches), "completions": 0, "process_tokens": 0, "gates_open": 0}
    for b, batch in enumerate(batches):
        where = f"{arm.name}, batch {b}"
        rows = batch.completion_mask.size(0)
        counts["completions"] += rows
        if arm.reward in ("outcome", "scalar_mixed"):
            assert batch.advantages.dim() == 1, f"{where}: TRL's advantages are one per completion"
            if arm.reward == "outcome":
                assert batch.annotations is None, f"{where}: the outcome arm scored with a probe"
                expected_rewards = batch.outcomes
            else:
                expected_rewards = [_scalar(a, config.training.lam) for a in batch.annotations]
                _check_probe(batch, "reference", where)
            assert np.allclose(batch.rewards, expected_rewards, equal_nan=True), f"{where}: rewards"
            for start in range(0, rows, size):
                expected = _normalised(expected_rewards[start : start + size], eps=1e-4)
                got = batch.advantages[start : start + size].numpy()
                assert np.allclose(got, expected, atol=1e-4), (
                    f"{where}, group {start // size}: {got} {expected}"
                )
            continue
        counts["process_tokens"] += _check_decoupled(arm, trainer, batch, size, where)
        counts["replaced_steps"] = counts.get("replaced_steps", 0) + _check_source(arm, batch, where)
        counts["gates_open"] += sum(batch.gates)
    if arm.reward == "decoupled":
        flat = all(_flat_process(batch, size) for batch in batches)
        assert counts["process_tokens"] > 0 or flat, f"{arm.name}: no process credit on any CoT token"
        _check_sft(arm, trainer, batches)
        if arm.advantages is not None and arm.advantages.sft_weight > 0:
            assert counts["gates_open"] > 0, f"{arm.name}: no SFT gate opened, the SFT term never ran"
    return counts


def _flat_process(batch: Any, size: int) -> bool:
    """Whether every group's process totals are equal (then no CoT token gets process credit: an oracle
    over a policy whose every chain fails at once)."""
    totals = [sum(s.reward for s in a.steps) for a in batch.annotations]
    return all(len(set(totals[i : i + size])) <= 1 for i in range(0, len(totals), size))


def _check_source(arm: ArmSpec, batch: Any, where: str) -> int:
    """The controls' step rewards against the probe's annotations; returns the steps whose reward differs."""
    import controls
    import task

    used, probed = batch.annotations, batch.mig_annotations
    assert len(used) == len(probed), f"{where}: {len(used)} annotations trained on, {len(probed)} scored"
    if arm.process_reward == "mig":
        assert used == probed, f"{where}: the MIG arm trained on rewards the probe did not give"
        return 0
    changed = 0
    for row, (mine, theirs) in enumerate(zip(used, probed, strict=True)):
        assert [s.span for s in mine.steps] == [s.span for s in theirs.steps], f"{where}, row {row}: steps"
        assert mine.outcome == theirs.outcome, f"{where}, row {row}: outcome"
        if arm.process_reward == "oracle":
            problem = controls.problem_of(batch.questions[row])
            expected = task.oracle_step_rewards(problem, [s.text for s in theirs.steps])
            assert [s.reward for s in mine.steps] == expected, f"{where}, row {row}: oracle rewards"
        changed += sum(a.reward != b.reward for a, b in zip(mine.steps, theirs.steps, strict=True))
    if arm.process_reward == "placebo":
        mine_all = sorted(s.reward for a in used for s in a.steps)
        theirs_all = sorted(s.reward for a in probed for s in a.steps)
        assert mine_all == theirs_all, f"{where}: the placebo's rewards are not the batch's MIG rewards"
        assert changed > 0 or len(set(theirs_all)) < 2, f"{where}: the placebo left every reward in place"
    return changed


def _scalar(annotation: Any, lam: float) -> float:
    if annotation is None:
        return float("nan")
    return float(annotation.outcome) + lam * sum(step.reward for step in annotation.steps)


def _check_probe(batch: Any, expected: str, where: str) -> None:
    names = {a.probe_model for a in batch.annotations if a is not None}
    want = {expected if expected == "reference" else f"policy@{batch.step}"}
    assert names == want, f"{where}: scored by {names}, expected {want}"


def _check_decoupled(arm: ArmSpec, trainer: Any, batch: Any, size: int, where: str) -> int:
    from mig_annotator.schemas.token_alignment import align_annotation, token_offsets

    settings = arm.advantages
    assert settings is not None
    _check_probe(batch, "reference" if arm.probe == "frozen" else "policy", where)
    assert batch.advantages.dim() == 2, f"{where}: decoupled advantages are per token"
    annotations = batch.annotations
    assert all(a is not None for a in annotations), f"{where}: an unscored completion"
    ids = batch.completion_ids
    process_tokens = 0
    for start in range(0, len(annotations), size):
        group = annotations[start : start + size]
        outcome = _normalised([float(a.outcome) for a in group], eps=settings.eps)
        if settings.placement == "sequence":
            totals = _normalised(
                [sum(s.reward for s in a.steps) for a in group], floor=settings.process_std_floor
            )
        else:
            pooled = [s.reward for a in group for s in a.steps]
            pooled_norm = iter(_normalised(pooled, floor=settings.process_std_floor))
            per_step = [[next(pooled_norm) for _ in a.steps] for a in group]
        for offset, annotation in enumerate(group):
            row = start + offset
            mask = batch.completion_mask[row].bool().numpy()
            alignment = align_annotation(
                annotation, token_offsets(trainer.processing_class, ids[row].tolist(), annotation.completion)
            )
            cot = alignment.cot_mask & mask
            got = batch.advantages[row].numpy().astype(np.float64)
            expected = np.where(mask, settings.outcome_weight * outcome[offset], 0.0)
            if settings.placement == "sequence":
                process = np.where(cot, totals[offset], 0.0)
            else:
                process = np.zeros(len(mask))
                for value, end in zip(per_step[offset], alignment.step_end_tokens, strict=True):
                    if end >= 0:
                        process[: min(int(end), len(mask) - 1) + 1] += value
                process = np.where(cot, process, 0.0)
            expected = expected + settings.process_weight * process
            assert np.allclose(got, expected, atol=1e-5), f"{where}, row {row}: {got} vs {expected}"
            process_tokens += int((np.abs(process) > 1e-9).sum())
        gates = [
            a.outcome == 1 and max((s.reward for s in a.steps), default=0.0) > settings.sft_threshold
            for a in group
        ]
        assert batch.gates[start : start + size] == gates, f"{where}: SFT gates"
    return process_tokens


def _check_sft(arm: ArmSpec, trainer: Any, batches: list[Any]) -> None:
    settings = arm.advantages
    assert settings is not None
    logged = [entry["mig/sft_nll"] for entry in trainer.state.log_history if "mig/sft_nll" in entry]
    assert len(logged) == len(batches), f"{arm.name}: {len(logged)} SFT NLL logs for {len(batches)} batches"
    for b, (batch, nll) in enumerate(zip(batches, logged, strict=True)):
        if settings.sft_weight > 0 and any(batch.gates):
            assert nll > 0, f"{arm.name}, batch {b}: gate open but no SFT term"
        else:
            assert nll == 0, f"{arm.name}, batch {b}: SFT NLL {nll} with the term off or no gate open"
