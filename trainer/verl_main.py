"""Launch verl 0.9's PPO trainer with the MIG estimator and loss registered in every process.

    python -m mig_annotator.trainer.verl_main --config-path examples --config-name verl_mig_grpo [overrides]

takes the same arguments as ``python -m verl.trainer.main_ppo`` (Hydra, verl's ``ppo_trainer`` defaults)
and runs it after :func:`prepare`:

* ``algorithm.mig`` is validated (:func:`mig_annotator.trainer.verl_estimator.advantage_settings`), so a
  typo fails before Ray starts, naming the key;
* ``VERL_USE_EXTERNAL_MODULES`` gains the estimator and loss modules, in this process and in the Ray
  runtime environment (``ray_kwargs.ray_init.runtime_env.env_vars``), so that the TaskRunner (where
  verl calls ``compute_advantage``) and the actor workers (where the loss runs) register them when
  they import verl;
* with ``adv_estimator=mig_decoupled`` and ``sft_weight > 0`` the actor's loss becomes ``mig_sft`` around
  the configured one (``$MIG_SFT_BASE_LOSS`` = the former ``policy_loss.loss_mode``, ``$MIG_SFT_WEIGHT`` =
  ``sft_weight``); a config that names ``mig_sft`` itself keeps its ``$MIG_SFT_BASE_LOSS`` (default
  ``vanilla``).

* with ``reward.mig.follow_policy=true`` (the service's probe follows the policy,
  :mod:`mig_annotator.client.verl_follow`): ``hf_model`` joins ``actor.checkpoint.save_contents`` (verl then
  writes ``global_step_N/actor/huggingface``, the folder the service reloads), ``reward.mig.checkpoint_dir``
  becomes ``trainer.default_local_dir`` as an absolute path (the reward workers and the service do not
  share this process's working directory), and ``trainer.save_freq`` must be at least 1.

``adv_estimator=mig_decoupled`` needs groups: ``actor_rollout_ref.rollout.n`` below 2 is refused here,
before Ray starts (verl's default is 1, and one rollout per prompt gives every advantage 0).

``MIG_VERL_DRY_RUN=1`` prints what would run as JSON and exits without starting Ray: ``run``, every
resolved setting that decides what trains (:func:`resolved_run`: data files, model, n, batch
sizes, estimator, loss, service URL, probe), the prepared ``algorithm`` and actor loss, and the environment
given to Ray.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from mig_annotator.client.verl_reward_loop import DECOUPLED_ESTIMATOR

__all__ = ["DRY_RUN_ENV", "EXTERNAL_MODULES", "main", "prepare", "resolved_run"]

EXTERNAL_MODULES = ("mig_annotator.trainer.verl_estimator", "mig_annotator.trainer.verl_loss")
EXTERNAL_MODULES_ENV = "VERL_USE_EXTERNAL_MODULES"
DRY_RUN_ENV = "MIG_VERL_DRY_RUN"


def prepare(config: Any) -> dict[str, str]:
    """Validate ``config`` (verl's composed DictConfig), switch the loss to ``mig_sft`` where the SFT term
    is on, and return the environment every process needs (also set here and in Ray's runtime env)."""
    from omegaconf import OmegaConf, open_dict

    from mig_annotator.trainer.verl_estimator import advantage_settings
    from mig_annotator.trainer.verl_loss import SFT_BASE_LOSS_ENV, SFT_WEIGHT_ENV

    settings = advantage_settings(config.algorithm)
    _check_group_size(config)
    loaded = [m for m in os.environ.get(EXTERNAL_MODULES_ENV, "").split(",") if m]
    env = {EXTERNAL_MODULES_ENV: ",".join([*loaded, *(m for m in EXTERNAL_MODULES if m not in loaded)])}
    policy_loss = config.actor_rollout_ref.actor.policy_loss
    if config.algorithm.adv_estimator == DECOUPLED_ESTIMATOR and settings.sft_weight > 0:
        if policy_loss.loss_mode == "mig_sft":
            env[SFT_BASE_LOSS_ENV] = os.environ.get(SFT_BASE_LOSS_ENV, "vanilla")
        else:
            env[SFT_BASE_LOSS_ENV] = str(policy_loss.loss_mode)
            with open_dict(policy_loss):
                policy_loss.loss_mode = "mig_sft"
        env[SFT_WEIGHT_ENV] = repr(float(settings.sft_weight))
    elif policy_loss.loss_mode == "mig_sft":
        env[SFT_BASE_LOSS_ENV] = os.environ.get(SFT_BASE_LOSS_ENV, "vanilla")
        env[SFT_WEIGHT_ENV] = repr(float(settings.sft_weight))
    _follow_policy(config)
    os.environ.update(env)
    for key, value in env.items():  # a cluster started by `ray start` does not inherit this environment
        OmegaConf.update(config, f"ray_kwargs.ray_init.runtime_env.env_vars.{key}", value, force_add=True)
    return env


def _check_group_size(config: Any) -> None:
    """``mig_decoupled`` compares each rollout with the others of its prompt: one rollout per prompt
    (verl's default ``rollout.n`` is 1) would make every advantage 0 and train nothing."""
    if config.algorithm.adv_estimator != DECOUPLED_ESTIMATOR:
        return
    n = config.actor_rollout_ref.rollout.get("n", 1)
    if n is None or int(n) < 2:
        raise ValueError(
            f"algorithm.adv_estimator={DECOUPLED_ESTIMATOR} normalises each prompt's rollouts against each "
            f"other: set actor_rollout_ref.rollout.n to the group size, at least 2 (it is {n}; with one "
            "rollout per prompt every advantage is 0)"
        )


RESOLVED_KEYS = (
    "data.train_files",
    "data.val_files",
    "data.train_batch_size",  # prompts per step; each gets rollout.n responses
    "data.max_prompt_length",
    "data.max_response_length",
    "actor_rollout_ref.model.path",
    "actor_rollout_ref.rollout.name",
    "actor_rollout_ref.rollout.n",  # the group size
    "actor_rollout_ref.actor.ppo_mini_batch_size",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
    "actor_rollout_ref.actor.use_kl_loss",
    "actor_rollout_ref.actor.policy_loss.loss_mode",
    "algorithm.adv_estimator",
    "algorithm.mig",
    "reward.reward_manager.name",
    "reward.mig.base_url",  # the reward service
    "trainer.nnodes",
    "trainer.n_gpus_per_node",
    "trainer.total_epochs",
    "trainer.total_training_steps",
)


def resolved_run(config: Any) -> dict[str, Any]:
    """The settings that decide what trains (:data:`RESOLVED_KEYS`, resolved) and ``probe``: which model
    scores the rollouts."""
    from omegaconf import OmegaConf

    def pick(key: str) -> Any:
        value = OmegaConf.select(config, key, default=None)
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    run = {key: pick(key) for key in RESOLVED_KEYS}
    every = pick("reward.mig.reload_every_n_steps") or pick("trainer.save_freq")
    run["probe"] = (
        f"the service's probe, reloaded from the policy's checkpoints every {every} steps"
        if pick("reward.mig.follow_policy")
        else "the service's probe (its own fixed weights)"
    )
    return run


def _follow_policy(config: Any) -> None:
    """With ``reward.mig.follow_policy``: verl saves Hugging Face folders the service can reload, where the
    reward workers find them."""
    from omegaconf import OmegaConf, open_dict

    mig = OmegaConf.select(config, "reward.mig")
    if mig is None or not bool(mig.get("follow_policy", False)):
        return
    every = mig.get("reload_every_n_steps") or config.trainer.get("save_freq", -1)
    if every is None or int(every) < 1:
        raise ValueError(
            "reward.mig.follow_policy=true reloads the service from verl's checkpoints: set "
            f"trainer.save_freq to the reload interval in steps (at least 1; it is {every})"
        )
    checkpoint = config.actor_rollout_ref.actor.checkpoint
    with open_dict(checkpoint):
        contents = list(checkpoint.save_contents)
        if "hf_model" not in contents:
            checkpoint.save_contents = [*contents, "hf_model"]
    with open_dict(mig):
        mig.checkpoint_dir = os.path.abspath(
            os.path.expanduser(str(mig.get("checkpoint_dir") or config.trainer.default_local_dir))
        )


def _run(config: Any) -> None:
    from omegaconf import OmegaConf
    from verl.trainer import main_ppo

    env = prepare(config)
    if os.environ.get(DRY_RUN_ENV, "") not in ("", "0"):
        shown = {
            "run": resolved_run(config),
            "algorithm": OmegaConf.to_container(config.algorithm, resolve=True),
            "policy_loss": OmegaConf.to_container(config.actor_rollout_ref.actor.policy_loss, resolve=True),
            "reward_manager": OmegaConf.to_container(config.reward.reward_manager, resolve=True),
            "reward_mig": OmegaConf.to_container(config.reward.get("mig", {}), resolve=True),
            "save_contents": list(config.actor_rollout_ref.actor.checkpoint.save_contents),
            "env": env,
            "ray_env_vars": OmegaConf.to_container(config.ray_kwargs.ray_init.runtime_env.env_vars),
        }
        print(json.dumps(shown, indent=2, sort_keys=True))
        return
    for module in EXTERNAL_MODULES:  # this process too (compute_advantage may run here without Ray)
        __import__(module)
    main_ppo.main(config)  # Hydra's decorated main runs the task on a config passed in


def main() -> None:
    """Hydra entry point with verl's own config directory and ``ppo_trainer`` as the default config."""
    import hydra
    from verl.trainer import main_ppo

    config_dir = str(Path(main_ppo.__file__).resolve().parent / "config")
    hydra.main(config_path=config_dir, config_name="ppo_trainer", version_base=None)(_run)()


if __name__ == "__main__":
    sys.exit(main())
