"""verl 0.9's ``mig_sft`` policy loss: the configured PPO/GRPO loss plus the dual-gated SFT term.

    loss = base_loss + gamma * sft,    sft = agg_loss(-log_prob, gate_mask, loss_agg_mode, global batch info)

``base_loss`` is the registered loss named by ``$MIG_SFT_BASE_LOSS`` (default ``vanilla``) and ``gamma`` is
``$MIG_SFT_WEIGHT`` (default 0.0: no SFT term). ``sft`` goes through verl's ``agg_loss`` with the gated
tokens as the mask: with ``token-mean`` inside verl's actor (which fills ``config.global_batch_info``) it
is the NLL summed over the gated tokens divided by the global batch's response tokens, so micro-batches
and data-parallel ranks add up as for the base loss; called without that info, it is the mean NLL over
the gated tokens.

How the gate reaches the loss: verl 0.9.1 calls a policy loss with ``old_log_prob, log_prob, advantages,
response_mask, loss_agg_mode, config, rollout_is_weights`` only (``verl.workers.utils.losses.ppo_loss``),
and ``PolicyLossConfig`` refuses extra keys, so the estimator folds the gate into the one per-token field
it writes: :func:`fold_gate` sets the lowest mantissa bit of every advantage of a gated completion and
clears it elsewhere (a change of at most one float32 ulp, ~6e-8 relative); :func:`unfold_gate` reads it
back. verl copies the advantages bit for bit between the estimator and the loss (transfer queue, nested
tensors, micro-batches). The settings come from the environment because the actor's config cannot carry
them; ``mig_annotator.trainer.verl_main`` sets both from ``algorithm.mig`` for every Ray worker.

Importing this module needs verl; it registers the loss as ``mig_sft``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn, register_policy_loss

__all__ = ["SFT_BASE_LOSS_ENV", "SFT_WEIGHT_ENV", "fold_gate", "mig_sft_loss", "unfold_gate"]

SFT_BASE_LOSS_ENV = "MIG_SFT_BASE_LOSS"
SFT_WEIGHT_ENV = "MIG_SFT_WEIGHT"


def fold_gate(advantages: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """float32 ``advantages`` (bs, T) with each row's lowest mantissa bit set where ``gate`` (bs,) holds."""
    if advantages.dtype != torch.float32:
        raise ValueError(f"fold_gate: advantages must be float32, got {advantages.dtype}")
    bits = advantages.contiguous().view(torch.int32) & ~1
    bits = bits | gate.to(torch.int32).reshape(-1, 1).expand_as(bits)
    return bits.view(torch.float32)


def unfold_gate(advantages: torch.Tensor) -> torch.Tensor:
    """The per-token gate (bool, like ``advantages``) that :func:`fold_gate` folded in."""
    return (advantages.detach().to(torch.float32).contiguous().view(torch.int32) & 1).bool()


def _settings() -> tuple[str, float]:
    base = os.environ.get(SFT_BASE_LOSS_ENV, "vanilla")
    if base == "mig_sft":
        raise ValueError(f"${SFT_BASE_LOSS_ENV} names the loss to wrap; it cannot be mig_sft itself")
    try:
        weight = float(os.environ.get(SFT_WEIGHT_ENV, "0.0"))
    except ValueError as error:
        raise ValueError(f"${SFT_WEIGHT_ENV} must be a number: {error}") from None
    return base, weight


@register_policy_loss("mig_sft")  # type: ignore[arg-type]
def mig_sft_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The base loss on the advantages plus ``gamma`` times the gated NLL (see the module docstring)."""
    base_name, weight = _settings()
    base_loss, metrics = get_policy_loss_fn(base_name)(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=response_mask,
        loss_agg_mode=loss_agg_mode,
        config=config,
        rollout_is_weights=rollout_is_weights,
    )
    gate = unfold_gate(advantages) & response_mask.bool()
    batch_info = dict(getattr(config, "global_batch_info", None) or {})
    sft = agg_loss(
        loss_mat=-log_prob, loss_mask=gate.to(log_prob.dtype), loss_agg_mode=loss_agg_mode, **batch_info
    )
    if not gate.any():
        sft = log_prob.sum() * 0.0  # keeps the graph; agg_loss would divide 0 by 0
    metrics = {
        **metrics,
        "actor/mig_sft_loss": float(sft.detach()),
        "actor/mig_sft_gated_tokens": float(gate.sum()),
    }
    return base_loss + weight * sft, metrics
