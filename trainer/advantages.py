"""The method's decoupled advantages and its dual-gated SFT term: one definition for every trainer.

For the completions i of one group (one prompt) with outcome o_i, step rewards r_ik and process total
P_i = sum_k r_ik, the advantage of policy token t of completion i is

    A_it = alpha * A^p_it + beta * A^o_i        (alpha = process_weight, beta = outcome_weight)

* **Outcome** ``A^o_i = (o_i - mean(o)) / (std(o) + eps)`` (``outcome_std=False``: ``o_i - mean(o)``, as
  Dr. GRPO), on every ``completion_mask`` token.
* **Process**, on ``cot_mask`` tokens only (0 elsewhere), in one of two placements:

  - ``sequence``: ``A^p_it = norm(P_i)``, the group-normalised process total on every CoT token (the
    method's public text);
  - ``step``: every r_ik is normalised over all the steps of the group, ``n_ik = norm(r_ik)``, and a CoT
    token's advantage is the sum of the normalised rewards of the steps that end at or after it,
    ``A^p_it = sum_{k: end_ik >= t} n_ik`` (the process-supervision form of DeepSeekMath's GRPO).

  ``norm(x) = (x - mean(x)) / max(std(x), process_std_floor)`` (``process_std=False``: ``x - mean(x)``).
  **The floor rule**: a spread below ``process_std_floor`` is divided by the floor, not by itself, so small
  process differences stay small instead of being blown up to unit scale.

Statistics (mean, std) are over the *scored* members of the group only; ``std`` is the sample standard
deviation (ddof=1, as TRL's and verl's GRPO). Degenerate groups are well defined: equal outcomes give
``A^o = 0``; a group with a single scored member gets 0 on every token (no baseline to compare with, in
either placement); a member that could not be scored
(``outcome=None``) is left out of the statistics and gets 0 on every token, never a penalty.

**SFT gate**: a completion enters the SFT term (``sft_weight`` * token-mean NLL) iff it is correct and its
gate statistic (``max_k r_k``, or ``sum_k r_k`` with ``sft_statistic="sum"``) is over ``sft_threshold``:
the same rule as the annotation's ``sft_gate`` column and ``export sft``
(:func:`mig_annotator.schemas.scalar.sft_gate`).

Pure: numpy and schemas only (no torch, no trainer library, no engine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mig_annotator.schemas import SftStatistic, TraceAnnotation
from mig_annotator.schemas.credit import CompletionCredit, unscored
from mig_annotator.schemas.scalar import sft_gate as sft_gate_rule
from mig_annotator.schemas.scalar import sft_gate_statistic
from mig_annotator.schemas.token_alignment import align_annotation

__all__ = [
    "AdvantageSettings",
    "CompletionCredit",
    "credit_from_annotation",
    "group_token_advantages",
    "sft_gate",
    "unscored",
]

Placement = Literal["sequence", "step"]


class AdvantageSettings(BaseModel):
    """How rewards become per-token advantages and which completions enter the SFT term."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    placement: Placement = Field(
        default="sequence",
        description="sequence: the group-normalised P_i on every CoT token; step: each CoT token gets the "
        "sum of the group-normalised r_k of the steps ending at or after it.",
    )
    process_weight: float = Field(default=1.0, description="alpha: the process advantage's weight.")
    outcome_weight: float = Field(default=1.0, description="beta: the outcome advantage's weight.")
    outcome_std: bool = Field(
        default=True, description="Divide the centred outcome by the group's std (False: Dr. GRPO)."
    )
    process_std: bool = Field(default=True, description="Divide the centred process reward by its spread.")
    process_std_floor: float = Field(
        default=0.25,
        ge=0.0,
        description="A process spread below this is divided by this floor instead: differences of a few "
        "hundredths (an all-wrong group with P_i from 0.22 to 0.32) give advantages within +-0.25, "
        "well under an outcome difference (+-0.5 to 1.5 in a group of 4), not +-1.2.",
    )
    eps: float = Field(default=1e-6, gt=0.0, description="Added to the outcome std (GRPO's epsilon).")
    sft_weight: float = Field(
        default=0.1, ge=0.0, description="gamma: the SFT term's weight (0 turns it off)."
    )
    sft_threshold: float = Field(
        default=0.0, description="SFT gate: correct and the gate statistic > threshold (ScoringConfig's)."
    )
    sft_statistic: SftStatistic = Field(
        default="max", description="The SFT gate's statistic: max_k r_k (default) or sum_k r_k."
    )


def credit_from_annotation(
    annotation: TraceAnnotation, offsets: Sequence[tuple[int, int]] | np.ndarray
) -> CompletionCredit:
    """The credit of a scored completion: its annotation placed on its policy tokens by
    :func:`~mig_annotator.schemas.token_alignment.align_annotation` (``offsets``: each token's character
    range in ``annotation.completion``)."""
    alignment = align_annotation(annotation, offsets)
    return CompletionCredit(
        outcome=float(annotation.outcome),
        step_rewards=np.array([step.reward for step in annotation.steps], dtype=np.float64),
        step_end_tokens=alignment.step_end_tokens.copy(),
        cot_mask=alignment.cot_mask.copy(),
        completion_mask=alignment.completion_mask.copy(),
    )


def group_token_advantages(
    members: Sequence[CompletionCredit], settings: AdvantageSettings | None = None
) -> list[np.ndarray]:
    """The per-token advantages A_it of one group's completions (float64, one array per member, of its
    ``n_tokens``), by the rule in the module's docstring."""
    settings = settings or AdvantageSettings()
    scored = [member for member in members if member.outcome is not None]
    outcome_of = _outcome_normaliser([float(m.outcome) for m in scored], settings)  # type: ignore[arg-type]
    if settings.placement == "sequence":
        totals = [float(np.sum(m.step_rewards)) for m in scored]
        process_of = _process_normaliser(totals, settings)
    else:
        pooled = [float(r) for m in scored for r in m.step_rewards]
        process_of = _process_normaliser(pooled, settings)
    advantages = []
    for member in members:
        values = np.zeros(member.n_tokens, dtype=np.float64)
        if member.outcome is not None and len(scored) > 1:
            cot = np.asarray(member.cot_mask, dtype=bool)
            if settings.placement == "sequence":
                process = np.where(cot, process_of(float(np.sum(member.step_rewards))), 0.0)
            else:
                process = np.where(cot, _steps_at_or_after(member, process_of), 0.0)
            outcome = np.where(
                np.asarray(member.completion_mask, dtype=bool), outcome_of(member.outcome), 0.0
            )
            values = settings.process_weight * process + settings.outcome_weight * outcome
        advantages.append(values)
    return advantages


def sft_gate(credit: CompletionCredit, settings: AdvantageSettings | None = None) -> bool:
    """Whether ``credit`` enters the SFT term: correct AND its gate statistic > ``sft_threshold`` (the
    annotation's ``sft_gate`` rule); never for an unscored completion."""
    settings = settings or AdvantageSettings()
    if credit.outcome is None:
        return False
    statistic = sft_gate_statistic(credit.step_rewards.tolist(), settings.sft_statistic)
    return sft_gate_rule(credit.outcome, statistic, settings.sft_threshold)


def _steps_at_or_after(member: CompletionCredit, normalised: _Normaliser) -> np.ndarray:
    """Per token t: the sum of the normalised rewards of the steps whose end token is >= t."""
    per_end = np.zeros(member.n_tokens + 1, dtype=np.float64)
    for reward, end in zip(member.step_rewards, member.step_end_tokens, strict=True):
        if end >= 0:
            per_end[min(int(end), member.n_tokens - 1)] += normalised(float(reward))
    return np.cumsum(per_end[::-1])[::-1][: member.n_tokens]


class _Normaliser:
    """x -> (x - mean) / scale over one group's values."""

    def __init__(self, mean: float, scale: float) -> None:
        self.mean, self.scale = mean, scale

    def __call__(self, value: float) -> float:
        return (value - self.mean) / self.scale


def _spread(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _outcome_normaliser(values: Sequence[float], settings: AdvantageSettings) -> _Normaliser:
    mean, std = _spread(values)
    return _Normaliser(mean, std + settings.eps if settings.outcome_std else 1.0)


def _process_normaliser(values: Sequence[float], settings: AdvantageSettings) -> _Normaliser:
    mean, std = _spread(values)
    if not settings.process_std:
        return _Normaliser(mean, 1.0)
    scale = max(std, settings.process_std_floor)
    return _Normaliser(mean, scale if scale > 0 else 1.0)  # floor 0 and no spread: every value is the mean
