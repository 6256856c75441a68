"""One number per trace from an annotation, for trainers that take a scalar reward (client and service),
and the dual SFT gate's rule (the engine's ``sft_gate`` column and the trainer's SFT term share it)."""

from __future__ import annotations

from collections.abc import Sequence

from mig_annotator.schemas import SftStatistic, TraceAnnotation
from mig_annotator.schemas.api import RewardScalar


def scalar_reward(annotation: TraceAnnotation, kind: RewardScalar, lam: float = 1.0) -> float:
    """outcome (0 or 1), process (sum of step rewards), or mixed: outcome + lam * process."""
    if kind == "outcome":
        return float(annotation.outcome)
    if kind == "process":
        return annotation.process_reward
    if kind == "mixed":
        return annotation.outcome + lam * annotation.process_reward
    raise ValueError(f"reward must be 'outcome', 'process' or 'mixed', got {kind!r}")


def sft_gate(outcome: int | float, statistic: float, threshold: float = 0.0) -> bool:
    """Dual gate for SFT: keep a trace iff ``outcome == 1 and statistic > threshold`` (strict).

    ``statistic`` is ``max_k r_k`` as the method states it (``StepRewards.max_reward``, the default), or
    ``sum_k r_k`` (``StepRewards.process_reward``) where the scoring config asks for ``sft_statistic="sum"``;
    both are > 0 exactly when some step sets a new maximum, so they agree at the default threshold 0.
    Raises ``ValueError`` if ``outcome`` is not 0 or 1. A NaN ``statistic`` never passes.
    """
    if outcome not in (0, 1):
        raise ValueError(f"outcome must be 0 or 1, got {outcome!r}")
    return bool(outcome == 1 and statistic > threshold)


def sft_gate_statistic(step_rewards: Sequence[float], statistic: SftStatistic = "max") -> float:
    """The gate's statistic from the step rewards r_k: their max (0.0 with no steps) or their sum."""
    if statistic == "max":
        return max((float(r) for r in step_rewards), default=0.0)
    if statistic == "sum":
        return float(sum(float(r) for r in step_rewards))
    raise ValueError(f"sft_statistic must be 'max' or 'sum', got {statistic!r}")
