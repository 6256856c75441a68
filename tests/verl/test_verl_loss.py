"""The ``mig_sft`` policy loss against verl's own ``vanilla`` loss (real verl: `make test-verl`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

verl = pytest.importorskip("verl", reason="verl runs in its own venv: make test-verl")
torch = pytest.importorskip("torch")

from verl.trainer.ppo.core_algos import get_policy_loss_fn  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402

from mig_annotator.trainer.verl_loss import SFT_BASE_LOSS_ENV, SFT_WEIGHT_ENV, fold_gate, unfold_gate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def actor_config() -> ActorConfig:
    return ActorConfig(strategy="fsdp", ppo_micro_batch_size_per_gpu=2, use_dynamic_bsz=False, rollout_n=1)


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    lengths = [9, 5, 12, 7]
    mask = torch.tensor([[1.0] * n + [0.0] * (12 - n) for n in lengths])
    advantages = torch.randn(4, 12, generator=generator) * mask
    old = -torch.rand(4, 12, generator=generator) * 3
    new = (old + 0.05 * torch.randn(4, 12, generator=generator)).requires_grad_(True)
    gate = torch.tensor([True, False, True, False])
    return old, new, advantages, mask, gate


def test_fold_gate_moves_each_advantage_by_at_most_one_ulp_and_reads_back_per_token() -> None:
    _, _, advantages, _, gate = batch()
    folded = fold_gate(advantages, gate)
    assert torch.equal(unfold_gate(folded), gate.reshape(-1, 1).expand(4, 12))
    ulp = torch.finfo(torch.float32).eps * advantages.abs().clamp(min=torch.finfo(torch.float32).tiny)
    assert torch.all((folded - advantages).abs() <= ulp)
    assert torch.equal(unfold_gate(fold_gate(folded, ~gate)), (~gate).reshape(-1, 1).expand(4, 12))


def test_mig_sft_is_verls_vanilla_loss_plus_gamma_times_the_gated_token_mean_nll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SFT_BASE_LOSS_ENV, "vanilla")
    monkeypatch.setenv(SFT_WEIGHT_ENV, "0.5")
    old, new, advantages, mask, gate = batch()
    folded = fold_gate(advantages, gate)
    config = actor_config()
    loss, metrics = get_policy_loss_fn("mig_sft")(
        old_log_prob=old, log_prob=new, advantages=folded, response_mask=mask.bool(), config=config
    )
    base, _ = get_policy_loss_fn("vanilla")(
        old_log_prob=old, log_prob=new, advantages=advantages, response_mask=mask.bool(), config=config
    )
    nll, count = 0.0, 0
    for row in range(4):
        for t in range(12):
            if gate[row] and mask[row, t]:
                nll -= float(new[row, t].detach())
                count += 1
    assert metrics["actor/mig_sft_gated_tokens"] == count == 9 + 12
    assert metrics["actor/mig_sft_loss"] == pytest.approx(nll / count, rel=1e-6)
    assert float(loss) == pytest.approx(float(base) + 0.5 * nll / count, rel=1e-6)
    loss.backward()
    assert new.grad is not None and float(new.grad[1].abs().sum()) > 0  # the base loss still trains row 1


def test_without_an_open_gate_mig_sft_is_the_base_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SFT_WEIGHT_ENV, "2.0")
    old, new, advantages, mask, _ = batch()
    config = actor_config()
    closed = fold_gate(advantages, torch.zeros(4, dtype=torch.bool))
    loss, metrics = get_policy_loss_fn("mig_sft")(
        old_log_prob=old, log_prob=new, advantages=closed, response_mask=mask.bool(), config=config
    )
    base, _ = get_policy_loss_fn("vanilla")(
        old_log_prob=old, log_prob=new, advantages=closed, response_mask=mask.bool(), config=config
    )
    assert float(loss) == float(base) and metrics["actor/mig_sft_gated_tokens"] == 0.0


def test_verls_external_modules_hook_registers_the_loss_in_a_fresh_process() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VERL_USE_EXTERNAL_MODULES": "mig_annotator.trainer.verl_loss",
    }
    code = "import verl; from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as r; "
    code += "print('mig_sft' in r)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]
