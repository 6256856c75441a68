"""One number per trace from an annotation, for trainers that take a scalar reward (client and service)."""

from __future__ import annotations

from mig_annotator.schemas import TraceAnnotation
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
