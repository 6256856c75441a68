"""What MIG changed in one generation batch: the numbers a trainer logs next to its own.

:func:`batch_credit_metrics` takes the credits of a batch's completions (consecutive groups of
``group_size``, the global batch when training runs in several processes) and the per-token advantages the
trainer used, and returns, under ``mig/`` names:

* ``outcome_mean``: the mean outcome (0/1) of the scored completions;
* ``process_reward_mean``: the mean process total P_i = sum_k r_ik of the scored completions;
* ``process_reward_group_std``: the within-group sample std of P_i, averaged over the groups with two or
  more scored members (0 when every group's P_i are equal: the process part cannot act);
* ``zero_advantage_outcome_only``: the share of completions whose advantage is 0 on every token under
  outcome-only GRPO (the group's outcomes all equal, or unscored): what plain GRPO would not train on;
* ``zero_advantage_mig``: the same share under the advantages the trainer used;
* ``mig_changed_zero_advantage``: the share of completions outcome-only GRPO leaves at 0 and MIG does not;
* ``sft_gate_open`` (count) and ``sft_gate_open_rate`` (share of all completions);
* ``unscored``: completions the probe could not score (advantage 0, left out of their group's statistics).

Pure: numpy and the advantage rule only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mig_annotator.trainer.advantages import (
    AdvantageSettings,
    CompletionCredit,
    group_token_advantages,
    sft_gate,
)

__all__ = ["batch_credit_metrics", "outcome_only_settings"]


def outcome_only_settings(settings: AdvantageSettings) -> AdvantageSettings:
    """The same settings with the process part off and the outcome at weight 1: plain GRPO's advantage."""
    return settings.model_copy(update={"process_weight": 0.0, "outcome_weight": 1.0})


def batch_credit_metrics(
    credits: Sequence[CompletionCredit],
    used_advantages: Sequence[np.ndarray],
    group_size: int,
    settings: AdvantageSettings,
) -> dict[str, float]:
    """The ``mig/`` metrics of one batch (see the module); ``used_advantages[i]`` is completion i's."""
    if len(credits) != len(used_advantages) or len(credits) % group_size:
        raise ValueError(
            f"{len(credits)} credits, {len(used_advantages)} advantage rows: expected equal counts, a "
            f"multiple of the group size {group_size}"
        )
    plain = outcome_only_settings(settings)
    outcome_only: list[np.ndarray] = []
    spreads: list[float] = []
    for start in range(0, len(credits), group_size):
        group = credits[start : start + group_size]
        outcome_only.extend(group_token_advantages(group, plain))
        totals = [float(np.sum(m.step_rewards)) for m in group if m.outcome is not None]
        if len(totals) > 1:
            spreads.append(float(np.std(totals, ddof=1)))
    scored = [credit for credit in credits if credit.outcome is not None]
    plain_zero = [not np.any(row) for row in outcome_only]
    mig_zero = [not np.any(np.asarray(row)) for row in used_advantages]
    changed = sum(p and not m for p, m in zip(plain_zero, mig_zero, strict=True))
    gates = sum(sft_gate(credit, settings) for credit in credits)
    count = max(len(credits), 1)
    return {
        "mig/outcome_mean": _mean([float(c.outcome) for c in scored]),  # type: ignore[arg-type]
        "mig/process_reward_mean": _mean([float(np.sum(c.step_rewards)) for c in scored]),
        "mig/process_reward_group_std": _mean(spreads) if spreads else 0.0,
        "mig/zero_advantage_outcome_only": sum(plain_zero) / count,
        "mig/zero_advantage_mig": sum(mig_zero) / count,
        "mig/mig_changed_zero_advantage": changed / count,
        "mig/sft_gate_open": float(gates),
        "mig/sft_gate_open_rate": gates / count,
        "mig/unscored": float(len(credits) - len(scored)),
    }


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
