"""The ``mig_decoupled`` estimator and the launcher against the real verl package (`make test-verl`).

Rewards come from the real reward loop (``MigRewardLoopManager`` with ``credit=record``) over a live
service; the advantages go through verl's own ``compute_advantage`` (what its driver calls) and then its
registered ``mig_sft`` loss, and are compared with a recomputation from the service's annotations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

verl = pytest.importorskip("verl", reason="verl runs in its own venv: make test-verl")
torch = pytest.importorskip("torch")

from omegaconf import OmegaConf  # noqa: E402
from verl.trainer.ppo.core_algos import get_policy_loss_fn  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402

from mig_annotator.client.verl_credit import encode_credit  # noqa: E402
from mig_annotator.schemas.token_alignment import token_offsets  # noqa: E402
from mig_annotator.trainer.advantages import (  # noqa: E402
    AdvantageSettings,
    credit_from_annotation,
    group_token_advantages,
    sft_gate,
    unscored,
)
from mig_annotator.trainer.verl_estimator import advantage_settings  # noqa: E402
from mig_annotator.trainer.verl_loss import SFT_BASE_LOSS_ENV, SFT_WEIGHT_ENV, unfold_gate  # noqa: E402
from tests.verl.support import (  # noqa: E402
    ROOT,
    expected_annotations,
    gsm8k_batch,
    loop_config,
    reward_loop,
    rollouts,
    run_launcher,
)

ESTIMATOR = "mig_decoupled"


@pytest.fixture(scope="module")
def scored_batch(service_url: str, tokenizer: Any) -> tuple[Any, list[Any], list[Any]]:
    """A verl batch whose ``rm_scores`` came from the real reward loop, the service's annotations of its
    samples, and each sample's credit recomputed from its annotation and its token ids."""
    from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls

    rows = rollouts()
    data = gsm8k_batch(tokenizer, rows)
    config = loop_config(service_url, estimator=ESTIMATOR)
    rm_scores, _ = reward_loop(
        resolve_reward_manager_cls(config), load_reward_manager(config, tokenizer), data
    )
    data.batch["token_level_rewards"] = rm_scores
    annotations = expected_annotations(service_url, rows, tokenizer, data)
    width = data.batch["prompts"].shape[1]
    credits = []
    for i, annotation in enumerate(annotations):
        length = int(data.batch["attention_mask"][i, width:].sum())
        ids = data.batch["responses"][i, :length].tolist()
        credits.append(
            credit_from_annotation(annotation, token_offsets(tokenizer, ids, annotation.completion))
        )
    return data, annotations, credits


def algorithm(**mig: Any) -> Any:
    return OmegaConf.create(
        {"adv_estimator": ESTIMATOR, "use_kl_in_reward": False, "norm_adv_by_std_in_grpo": True, "mig": mig}
    )


def reference(data: Any, credits: list[Any], settings: AdvantageSettings) -> tuple[np.ndarray, np.ndarray]:
    """Per-token advantages and per-sample gates from the one definition, group by group (verl's uid)."""
    uids = list(data.non_tensor_batch["uid"])
    expected = np.zeros(tuple(data.batch["responses"].shape), dtype=np.float64)
    for uid in dict.fromkeys(uids):
        members = [i for i, u in enumerate(uids) if u == uid]
        for i, values in zip(
            members, group_token_advantages([credits[i] for i in members], settings), strict=True
        ):
            expected[i, : len(values)] = values
    gates = np.array([sft_gate(credit, settings) for credit in credits])
    return expected, gates


def run_estimator(data: Any, config: Any) -> Any:
    batch = data.select_idxs(list(range(len(data))))  # a copy: compute_advantage writes into the batch
    return compute_advantage(batch, adv_estimator=ESTIMATOR, config=config)


@pytest.mark.parametrize("placement", ["sequence", "step"])
def test_verls_compute_advantage_gives_the_decoupled_advantages_of_the_reward_loops_records(
    scored_batch: tuple[Any, list[Any], list[Any]], placement: str
) -> None:
    data, annotations, credits = scored_batch
    config = algorithm(placement=placement, process_weight=0.7, outcome_weight=1.3, sft_weight=0.1)
    out = run_estimator(data, config)
    expected, gates = reference(data, credits, advantage_settings(config))
    advantages = out.batch["advantages"]
    assert advantages.dtype == torch.float32 and advantages.shape == data.batch["responses"].shape
    assert np.allclose(advantages.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(out.batch["returns"], advantages)
    mask = data.batch["response_mask"].bool()
    assert torch.all(advantages[~mask] == 0)
    assert torch.equal(unfold_gate(advantages) & mask, torch.from_numpy(gates)[:, None] & mask)
    # the credit is not one scalar per sample: in a group with right and wrong answers, the tokens off the
    # CoT carry the outcome advantage alone, and the CoT tokens the process advantage on top of it
    uids = list(data.non_tensor_batch["uid"])
    mixed = 0
    for i, annotation in enumerate(annotations):
        outcomes = np.array(
            [a.outcome for a, u in zip(annotations, uids, strict=True) if u == uids[i]], float
        )
        if outcomes.min() == outcomes.max():
            continue
        mixed += 1
        cot, completion = credits[i].cot_mask, credits[i].completion_mask
        row = advantages[i, : len(cot)].numpy()
        outcome = (annotation.outcome - outcomes.mean()) / (outcomes.std(ddof=1) + 1e-6)
        assert cot.any() and (completion & ~cot).any()
        assert np.allclose(row[completion & ~cot], 1.3 * outcome, atol=1e-5)
        assert not np.allclose(row[cot], 1.3 * outcome, atol=1e-5)
    assert mixed, "the fixture needs a group with right and wrong answers"


def test_a_member_the_service_could_not_score_gets_zero_and_leaves_its_groups_statistics(
    scored_batch: tuple[Any, list[Any], list[Any]],
) -> None:
    data, _, credits = scored_batch
    failed = 1
    width = data.batch["prompts"].shape[1]
    length = int(data.batch["attention_mask"][failed, width:].sum())
    broken = data.select_idxs(list(range(len(data))))
    rewards = broken.batch["token_level_rewards"].clone()
    rewards[failed] = 0
    rewards[failed, :length] = torch.from_numpy(encode_credit(length))  # what the manager writes on failure
    broken.batch["token_level_rewards"] = rewards
    config = algorithm(placement="step")
    out = run_estimator(broken, config)
    with_failure = [unscored(len(c.cot_mask)) if i == failed else c for i, c in enumerate(credits)]
    expected, _ = reference(broken, with_failure, advantage_settings(config))
    assert torch.all(out.batch["advantages"][failed] == 0)
    assert np.allclose(out.batch["advantages"].numpy(), expected, rtol=1e-6, atol=1e-6)
    group = [
        i for i, u in enumerate(data.non_tensor_batch["uid"]) if u == data.non_tensor_batch["uid"][failed]
    ]
    assert len(group) > 2  # the others still have a baseline, and it no longer counts the failed one
    full, _ = reference(data, credits, advantage_settings(config))
    assert not np.allclose(expected[group[0]], full[group[0]])


def test_the_mig_sft_loss_on_the_estimators_advantages_is_the_base_loss_plus_the_gated_nll(
    scored_batch: tuple[Any, list[Any], list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from verl.workers.config import ActorConfig

    data, _, credits = scored_batch
    # a threshold every correct sample passes, so the gate is open on the fixture's correct answers
    config = algorithm(sft_threshold=-1.0)
    advantages = run_estimator(data, config).batch["advantages"]
    gates = np.array([sft_gate(c, advantage_settings(config)) for c in credits])
    assert gates.any() and not gates.all()
    monkeypatch.setenv(SFT_BASE_LOSS_ENV, "vanilla")
    monkeypatch.setenv(SFT_WEIGHT_ENV, "0.25")
    mask = data.batch["response_mask"].bool()
    generator = torch.Generator().manual_seed(3)
    old = -torch.rand(mask.shape, generator=generator) * 2
    new = (old + 0.05 * torch.randn(mask.shape, generator=generator)).requires_grad_(True)
    actor = ActorConfig(strategy="fsdp", ppo_micro_batch_size_per_gpu=2, use_dynamic_bsz=False, rollout_n=1)
    loss, metrics = get_policy_loss_fn("mig_sft")(
        old_log_prob=old, log_prob=new, advantages=advantages, response_mask=mask, config=actor
    )
    base, _ = get_policy_loss_fn("vanilla")(
        old_log_prob=old, log_prob=new, advantages=advantages, response_mask=mask, config=actor
    )
    gated = torch.from_numpy(gates)[:, None] & mask
    nll = float(-(new.detach() * gated).sum() / gated.sum())
    assert metrics["actor/mig_sft_gated_tokens"] == float(gated.sum())
    assert float(loss) == pytest.approx(float(base) + 0.25 * nll, rel=1e-6)


def test_the_estimator_refuses_what_would_corrupt_or_misread_the_credit(
    scored_batch: tuple[Any, list[Any], list[Any]],
) -> None:
    data, _, _ = scored_batch
    with pytest.raises(ValueError, match="use_kl_in_reward=true overwrites them"):
        run_estimator(data, OmegaConf.merge(algorithm(), {"use_kl_in_reward": True}))
    with pytest.raises(ValueError, match=r"algorithm\.mig\.placment"):
        run_estimator(data, algorithm(placment="step"))
    plain = data.select_idxs(list(range(len(data))))
    plain.batch["token_level_rewards"] = torch.zeros_like(plain.batch["token_level_rewards"])
    plain.batch["token_level_rewards"][:, 3] = 1.0  # another manager's scalar on a token
    with pytest.raises(ValueError, match="row 0 is not a MIG credit record"):
        run_estimator(plain, algorithm())


def test_outcome_std_follows_verls_norm_adv_by_std_in_grpo_unless_set() -> None:
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": False, "mig": {}})
    assert advantage_settings(config).outcome_std is False
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": False, "mig": {"outcome_std": True}})
    assert advantage_settings(config).outcome_std is True


def test_the_launcher_on_the_shipped_example_trains_decoupled_with_the_sft_loss_in_every_process() -> None:
    out = run_launcher()
    assert out.returncode == 0, out.stderr[-3000:]
    shown = json.loads(out.stdout[out.stdout.index("{") :])
    assert (
        shown["algorithm"]["adv_estimator"] == ESTIMATOR and shown["algorithm"]["use_kl_in_reward"] is False
    )
    assert shown["policy_loss"]["loss_mode"] == "mig_sft"
    modules = "mig_annotator.trainer.verl_estimator,mig_annotator.trainer.verl_loss"
    expected_env = {
        "VERL_USE_EXTERNAL_MODULES": modules,
        "MIG_SFT_BASE_LOSS": "vanilla",
        "MIG_SFT_WEIGHT": "0.1",
    }
    assert shown["env"] == expected_env and shown["ray_env_vars"] == expected_env
    assert shown["reward_manager"]["name"] == "MigRewardLoopManager"


def test_the_launcher_keeps_the_loss_without_sft_and_names_a_mistyped_setting() -> None:
    out = run_launcher("algorithm.mig.sft_weight=0", "actor_rollout_ref.actor.policy_loss.loss_mode=gspo")
    assert out.returncode == 0, out.stderr[-3000:]
    shown = json.loads(out.stdout[out.stdout.index("{") :])
    assert shown["policy_loss"]["loss_mode"] == "gspo" and "MIG_SFT_WEIGHT" not in shown["env"]
    typo = run_launcher("+algorithm.mig.placment=step")
    assert typo.returncode != 0 and "algorithm.mig.placment" in typo.stderr


def test_verls_external_modules_hook_registers_the_estimator_in_a_fresh_process() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VERL_USE_EXTERNAL_MODULES": "mig_annotator.trainer.verl_estimator",
    }
    code = "import verl; from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY as r; "
    code += f"print({ESTIMATOR!r} in r)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]
