"""verl 0.9's ``mig_decoupled`` advantage estimator: the method's per-token advantages from credit records.

With ``algorithm.adv_estimator=mig_decoupled``,
:class:`~mig_annotator.client.verl_reward_loop.MigRewardLoopManager` writes each sample's
:mod:`~mig_annotator.client.verl_credit` record (outcome, step rewards, step-end tokens,
``cot_mask``, ``completion_mask``) into its ``rm_scores`` row, and verl hands that row to this estimator as
``token_level_rewards`` (``algorithm.use_kl_in_reward`` must be false: the KL penalty would overwrite the
record). The estimator decodes every row, groups the samples by verl's ``uid`` (one prompt), computes the
advantages of :func:`mig_annotator.trainer.advantages.group_token_advantages` (process credit on the CoT
tokens, the outcome on every completion token; a sample the service could not score gets 0 and stays out
of its group's statistics), multiplies them by ``response_mask`` (tokens the policy did not sample, such
as tool output, get 0) and folds each sample's SFT gate into the advantages' lowest mantissa bit for the
``mig_sft`` loss (:func:`mig_annotator.trainer.verl_loss.fold_gate`). ``returns`` equal the advantages,
as with verl's GRPO.

Options: ``algorithm.mig`` holds :class:`~mig_annotator.trainer.advantages.AdvantageSettings` fields
(``placement``, ``process_weight``, ``outcome_weight``, ``outcome_std``, ``process_std``,
``process_std_floor``, ``sft_weight``, ``sft_threshold``, ``sft_statistic``); ``outcome_std`` defaults to
verl's ``algorithm.norm_adv_by_std_in_grpo``. Unknown keys are an error naming them.

verl calls ``compute_advantage`` in its driver (the TaskRunner actor), so that process must import this
module: ``python -m mig_annotator.trainer.verl_main`` (the launcher) arranges it through
``VERL_USE_EXTERNAL_MODULES``. Importing this module needs verl; it registers the estimator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import ValidationError
from verl.trainer.ppo.core_algos import register_adv_est

from mig_annotator.client.verl_credit import HEADER, MAGIC, decode_credit
from mig_annotator.client.verl_reward_loop import DECOUPLED_ESTIMATOR
from mig_annotator.trainer.advantages import (
    AdvantageSettings,
    CompletionCredit,
    group_token_advantages,
    sft_gate,
)
from mig_annotator.trainer.verl_loss import fold_gate

__all__ = ["advantage_settings", "compute_mig_decoupled_advantage"]


def advantage_settings(algorithm: Any) -> AdvantageSettings:
    """The :class:`AdvantageSettings` of verl's ``algorithm`` config (its ``mig`` section), validated."""
    section = _get(algorithm, "mig") or {}
    values = _plain(section)
    if not isinstance(values, Mapping):
        raise ValueError(f"algorithm.mig must be a mapping of advantage settings, got {values!r}")
    values = dict(values)
    values.setdefault("outcome_std", bool(_get(algorithm, "norm_adv_by_std_in_grpo", True)))
    try:
        return AdvantageSettings.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"algorithm.mig.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise ValueError(f"invalid algorithm.mig settings: {problems}") from None


@register_adv_est(DECOUPLED_ESTIMATOR)  # type: ignore[untyped-decorator]
def compute_mig_decoupled_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token advantages (bs, T) from the credit records in ``token_level_rewards`` (see the module)."""
    if config is not None and bool(_get(config, "use_kl_in_reward", False)):
        raise ValueError(
            "adv_estimator=mig_decoupled reads the MIG credit records in the rewards; "
            "algorithm.use_kl_in_reward=true overwrites them: set it to false and use the actor's KL loss "
            "(actor_rollout_ref.actor.use_kl_loss=true) instead"
        )
    if index is None:
        raise ValueError("adv_estimator=mig_decoupled needs verl's group index (the batch's 'uid' field)")
    settings = advantage_settings(config) if config is not None else AdvantageSettings()
    rows = token_level_rewards.detach().to(torch.float64).cpu().numpy()
    mask = response_mask.detach().cpu().numpy().astype(bool)
    credits = [_credit_of_row(rows[i], mask[i], i) for i in range(len(rows))]

    advantages = np.zeros(rows.shape, dtype=np.float64)
    gates = np.zeros(len(rows), dtype=bool)
    for members in _groups(index):
        values = group_token_advantages([credits[i] for i in members], settings)
        for i, value in zip(members, values, strict=True):
            advantages[i, : len(value)] = value
            gates[i] = sft_gate(credits[i], settings)
    valid = response_mask.to(torch.float32).cpu()
    # the gate on the response tokens only: padding and unsampled tokens stay exactly 0
    result = fold_gate(torch.from_numpy(advantages).to(torch.float32), torch.from_numpy(gates)) * valid
    result = result.to(token_level_rewards.device)
    return result, result.clone()


def _credit_of_row(row: np.ndarray, mask: np.ndarray, position: int) -> CompletionCredit:
    where = f"token_level_rewards row {position}"
    if len(row) < 1 or row[0] != MAGIC:
        decode_credit(row, len(row), where=where)  # raises: not a record
    if len(row) >= HEADER and row[4] > 0:
        tokens = int(row[4])
    else:  # a record of fewer than HEADER tokens holds only part of its header: its length is the mask's
        tokens = int(np.flatnonzero(mask)[-1]) + 1 if mask.any() else 1
    if tokens > len(row) or (tokens < len(row) and mask[tokens:].any()):
        raise ValueError(
            f"{where}: its credit record covers {tokens} response tokens, but response_mask marks tokens "
            "beyond them: the rewards do not belong to this batch's responses"
        )
    return decode_credit(row, tokens, where=where)


def _groups(index: np.ndarray) -> list[list[int]]:
    positions: dict[Any, list[int]] = {}
    for position, uid in enumerate(index.tolist() if hasattr(index, "tolist") else list(index)):
        positions.setdefault(uid, []).append(position)
    return list(positions.values())


def _get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping) or hasattr(config, "get"):
        return config.get(key, default)
    return getattr(config, key, default)


def _plain(value: Any) -> Any:
    """An OmegaConf container as plain Python (other values unchanged)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value
