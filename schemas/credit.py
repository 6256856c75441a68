"""What one completion brings to its group's advantages: its rewards and where they fall on its tokens.

One dataclass for every trainer path: TRL's subclass builds it from an annotation
(:func:`mig_annotator.trainer.advantages.credit_from_annotation`), verl's estimator reads it back from the
credit record in ``rm_scores`` (:mod:`mig_annotator.client.verl_credit`). Only numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CompletionCredit", "unscored"]


@dataclass(frozen=True, slots=True)
class CompletionCredit:
    """What one completion brings to its group: its rewards and where they fall on its policy tokens."""

    outcome: float | None  # o_i; None: unscored (out of the group statistics, advantage 0 everywhere)
    step_rewards: np.ndarray  # float64, r_k per step (one entry per step)
    step_end_tokens: np.ndarray  # int64, per step: the policy token where step k ends (-1: none)
    cot_mask: np.ndarray  # bool per policy token: where process advantages apply
    completion_mask: np.ndarray  # bool per policy token: where the outcome advantage applies

    def __post_init__(self) -> None:
        if len(self.step_rewards) != len(self.step_end_tokens):
            raise ValueError(
                f"step_rewards ({len(self.step_rewards)}) and step_end_tokens ({len(self.step_end_tokens)}) "
                "must have one entry per step"
            )
        if len(self.cot_mask) != len(self.completion_mask):
            raise ValueError(
                f"cot_mask ({len(self.cot_mask)}) and completion_mask ({len(self.completion_mask)}) must "
                "have one entry per policy token"
            )

    @property
    def n_tokens(self) -> int:
        return len(self.completion_mask)


def unscored(n_tokens: int) -> CompletionCredit:
    """The credit of a completion the service could not score: advantage 0 on its ``n_tokens`` tokens."""
    return CompletionCredit(
        outcome=None,
        step_rewards=np.zeros(0, dtype=np.float64),
        step_end_tokens=np.zeros(0, dtype=np.int64),
        cot_mask=np.zeros(n_tokens, dtype=bool),
        completion_mask=np.zeros(n_tokens, dtype=bool),
    )
