"""The reward fields of an annotation, from its value trajectory: the one derivation the engine and a rescore
share.

:func:`reward_fields` turns ``v_0..v_K`` (already aggregated) and the outcome into every field of a
:class:`TraceAnnotation` that the watermark, the aggregation and the SFT settings decide: ``v0``, each step's
``v``, ``mig``, ``watermark`` and ``reward``, ``process_reward``, ``max_reward``, ``sft_gate`` and
``config_hash``. :class:`~mig_annotator.engine.annotator.Annotator` calls it after the probe pass;
:func:`rescore_annotation` calls it on an annotation's stored ``v_k`` (re-aggregated over its
``answer_tokens`` where the aggregation changes), so a dataset can be rescored under new settings without the
probe and equal a rebuild. Every other setting changes what the probe reads (:func:`settings_needing_probe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mig_annotator.engine.rewards import reaggregate_values, sft_gate, step_rewards
from mig_annotator.schemas import CharSpan, ScoringConfig, StepScore, TraceAnnotation
from mig_annotator.schemas.scalar import sft_gate_statistic

#: The scoring fields a rescore may change: they act on v_k after the probe pass.
RESCORABLE_FIELDS = ("aggregation", "watermark", "sft_threshold", "sft_statistic")


@dataclass(frozen=True, slots=True)
class RewardFields:
    """The reward-derived fields of one annotation (see :meth:`as_fields`)."""

    v0: float
    steps: list[StepScore]
    process_reward: float
    max_reward: float
    sft_gate: bool
    config_hash: str

    def as_fields(self) -> dict[str, Any]:
        """The fields by :class:`TraceAnnotation` name."""
        return {
            "v0": self.v0,
            "steps": self.steps,
            "process_reward": self.process_reward,
            "max_reward": self.max_reward,
            "sft_gate": self.sft_gate,
            "config_hash": self.config_hash,
        }


def reward_fields(
    values: ArrayLike, outcome: int, steps: Sequence[tuple[str, CharSpan]], config: ScoringConfig
) -> RewardFields:
    """The reward fields from ``values`` (``v_0..v_K`` under ``config.aggregation``), the outcome and the
    text and span of each scored step (``K`` of them), under ``config``'s watermark and SFT gate.

    Raises ``ValueError`` for non-finite values or a step count that is not ``len(values) - 1``.
    """
    rewards = step_rewards(values, config.watermark)
    if len(steps) != rewards.num_steps:
        raise ValueError(f"{len(steps)} steps for a value trajectory of {rewards.num_steps} steps")
    trajectory = np.asarray(values, dtype=np.float64)
    scored = [
        StepScore(
            index=k + 1,
            text=text,
            span=span,
            v=float(trajectory[k + 1]),
            mig=float(rewards.mig[k]),
            watermark=float(rewards.watermark[k]),
            reward=float(rewards.reward[k]),
        )
        for k, (text, span) in enumerate(steps)
    ]
    statistic = sft_gate_statistic(rewards.reward, config.sft_statistic)
    return RewardFields(
        v0=float(trajectory[0]),
        steps=scored,
        process_reward=rewards.process_reward,
        max_reward=rewards.max_reward,
        sft_gate=sft_gate(outcome, statistic, config.sft_threshold),
        config_hash=config.config_hash(),
    )


def settings_needing_probe(old: ScoringConfig, new: ScoringConfig) -> list[str]:
    """Dotted names of the settings that differ between ``old`` and ``new`` and change what the probe reads
    (segmentation, prompt, context limit): those need a probe pass; a rescore cannot change them."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    changed: list[str] = []
    for name in ScoringConfig.model_fields:
        if name in RESCORABLE_FIELDS or before[name] == after[name]:
            continue
        if isinstance(before[name], dict) and isinstance(after[name], dict):
            changed += [f"{name}.{key}" for key in before[name] if before[name][key] != after[name].get(key)]
        else:
            changed.append(name)
    return changed


def rescore_annotation(
    annotation: TraceAnnotation, old: ScoringConfig, new: ScoringConfig
) -> TraceAnnotation:
    """``annotation`` (scored under ``old``) as the engine would have scored it under ``new``, from its
    stored ``v_k`` and ``answer_tokens``, without the probe.

    Raises ``ValueError`` when ``new`` changes a setting the probe reads (:func:`settings_needing_probe`),
    when the annotation was not scored under ``old`` (its ``config_hash``), or when its values are unusable.
    """
    needing = settings_needing_probe(old, new)
    if needing:
        raise ValueError(f"{', '.join(needing)} change what the probe reads: they need a probe pass")
    if annotation.config_hash != old.config_hash():
        raise ValueError(
            f"trace {annotation.trace_id!r} was scored under config_hash {annotation.config_hash}, "
            f"not {old.config_hash()}"
        )
    values = reaggregate_values(
        [annotation.v0, *(step.v for step in annotation.steps)],
        annotation.answer_tokens,
        old.aggregation,
        new.aggregation,
    )
    steps = [(step.text, step.span) for step in annotation.steps]
    fields = reward_fields(values, annotation.outcome, steps, new)
    return TraceAnnotation.model_validate(annotation.model_dump() | fields.as_fields())
