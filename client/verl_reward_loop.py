"""verl 0.9's reward loop over the reward service: token-level MIG rewards from ``RewardManagerBase``.

Importing this module needs verl (>= 0.9) and registers :class:`MigRewardLoopManager` in verl's reward-loop
registry as ``"mig"``. In a verl config, load it by module path so that every Ray worker imports it::

    reward.reward_manager.source=importlib
    reward.reward_manager.name=MigRewardLoopManager
    reward.reward_manager.module.path=pkg://mig_annotator.client.verl_reward_loop

How the rewards travel: verl's reward loop calls ``run_single`` once per sample (concurrently; the
service micro-batches them), collects each ``reward_score`` and hands the list to the class's
``assemble_rm_scores``. ``run_single`` returns a :class:`TokenRewards`: a float (the sample's total,
``outcome_weight * outcome + process_weight * sum(r_k)``, so code that expects a scalar still works) that
also carries one reward per response token (:func:`mig_annotator.client.verl.token_rewards`: r_k on the
last token of step k, the outcome on the last answer token). ``assemble_rm_scores`` lays those on the
``rm_scores`` rows; a plain float (another manager's, or verl's agent-loop path) goes on the last token.
Each sample's trace carries verl's ``uid`` as its ``group_id``
(:func:`mig_annotator.client.verl.trace_of_sample`): the service keeps a group's traces in one probe call
when they reach its queue one after another.

Options come from ``config.reward.mig`` when present (add it with ``+reward.mig.base_url=...``): ``base_url``
and ``api_key`` (default ``$MIG_SERVICE_URL`` / ``$MIG_SERVICE_API_KEY``), ``outcome_weight``,
``process_weight``, ``fallback_reward``, ``on_service_down`` (raise | fallback), ``deadline_s``,
``max_retries``, ``credit`` (``tokens`` | ``record``), and ``follow_policy`` (below). A sample the
service cannot score gets ``fallback_reward`` on its last token and ``failed`` 1 in the reward extra info.

Two layouts of ``rm_scores`` (``credit``):

* ``tokens`` (the default with any estimator but ``mig_decoupled``): the dense token rewards above.
  verl's summing estimators (``grpo``, ``rloo``, ``opo``, ``gpg``, ``remax``, ...) start from
  ``token_level_rewards.sum(-1)``: they collapse the per-step credit into one scalar per sample, which
  the manager says once with a ``logging.warning`` naming ``mig_decoupled``.
* ``record`` (the default when ``algorithm.adv_estimator`` is ``mig_decoupled``): each row holds the
  sample's :mod:`mig_annotator.client.verl_credit` record (outcome, step rewards, step-end tokens,
  ``cot_mask``, ``completion_mask``, scored or not), which the estimator in
  ``mig_annotator.trainer.verl_estimator`` reads back. verl's ``critic/score`` metrics then sum record
  slots, not rewards: read ``outcome`` and ``process_reward`` from the reward extra info instead.

``follow_policy: true`` makes the service's probe follow the policy (:mod:`mig_annotator.client.verl_follow`):
each sample is scored by the weights verl saved at the newest save step at or before the step that
generated it, reloaded into the service on first need (the client's key must be an admin key of the
service, and the checkpoint folder on the service's disk). ``checkpoint_dir`` defaults to
``trainer.default_local_dir``, ``reload_every_n_steps`` to ``trainer.save_freq``; the launcher adds
``hf_model`` to the actor's ``checkpoint.save_contents``. The reward extra info then carries each
sample's ``global_step`` and ``probe_version``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from mig_annotator.client.fallback import RewardFallback
from mig_annotator.client.http import AsyncMigClient, MigServiceUnavailable, TraceResult
from mig_annotator.client.verl import extra_info, sample_token_ids, token_rewards, trace_of_sample
from mig_annotator.client.verl_credit import encode_credit
from mig_annotator.client.verl_follow import FollowPolicy, sample_global_step
from mig_annotator.schemas import TraceAnnotation
from mig_annotator.schemas.token_alignment import align_annotation, token_offsets

__all__ = ["DECOUPLED_ESTIMATOR", "SUMMING_ESTIMATORS", "MigRewardLoopManager", "TokenRewards"]

logger = logging.getLogger(__name__)

DECOUPLED_ESTIMATOR = "mig_decoupled"
SUMMING_ESTIMATORS = frozenset(
    {
        "grpo",
        "grpo_vectorized",
        "grpo_passk",
        "rloo",
        "rloo_vectorized",
        "opo",
        "gpg",
        "remax",
        "reinforce_plus_plus_baseline",
        "gdpo",
    }
)
"""verl 0.9.1 estimators that begin with ``token_level_rewards.sum(dim=-1)``: one scalar per sample."""

_warned: set[str] = set()


def _estimator(config: Any) -> str | None:
    algorithm = config.get("algorithm", None) if hasattr(config, "get") else None
    name = (
        algorithm.get("adv_estimator", None) if algorithm is not None and hasattr(algorithm, "get") else None
    )
    return None if name is None else str(getattr(name, "value", name))


def warn_if_collapsing(estimator: str | None) -> bool:
    """Log once per estimator that ``estimator`` sums the token rewards; True when it does."""
    if estimator not in SUMMING_ESTIMATORS:
        return False
    if estimator not in _warned:
        _warned.add(estimator)
        logger.warning(
            "MigRewardLoopManager with algorithm.adv_estimator=%s: verl's %s estimator sums each sample's "
            "token rewards (token_level_rewards.sum(-1)) and collapses the per-step MIG credit into one "
            "scalar. Use algorithm.adv_estimator=%s (python -m mig_annotator.trainer.verl_main) for "
            "process advantages on the chain-of-thought tokens and the outcome on the whole completion.",
            estimator,
            estimator,
            DECOUPLED_ESTIMATOR,
        )
    return True


class TokenRewards(float):
    """A sample's total reward (the float) with its per-token rewards (``dense``, one per response token)."""

    dense: list[float]

    def __new__(cls, dense: Sequence[float]) -> TokenRewards:
        value = super().__new__(cls, float(sum(dense)))
        value.dense = [float(x) for x in dense]
        return value

    def __reduce__(self) -> tuple[type[TokenRewards], tuple[list[float]]]:  # pickled across Ray workers
        return (TokenRewards, (self.dense,))


def _trainer_option(config: Any, key: str) -> Any:
    trainer = config.get("trainer", None) if hasattr(config, "get") else None
    return trainer.get(key, None) if trainer is not None and hasattr(trainer, "get") else None


def _options(config: Any) -> dict[str, Any]:
    reward = config.get("reward", None) if hasattr(config, "get") else None
    mig = reward.get("mig", None) if reward is not None and hasattr(reward, "get") else None
    return dict(mig.items()) if isinstance(mig, Mapping) or hasattr(mig, "items") else {}


@register("mig")
class MigRewardLoopManager(RewardManagerBase):
    """Token-level MIG rewards in verl 0.9's reward loop (see the module docstring)."""

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
        *,
        client: AsyncMigClient | None = None,
        **options: Any,
    ) -> None:
        super().__init__(config, tokenizer, compute_score)
        settings = {**_options(config), **options}
        self.outcome_weight = float(settings.get("outcome_weight", 1.0))
        self.process_weight = float(settings.get("process_weight", 1.0))
        self.fallback = RewardFallback(
            settings.get("fallback_reward", 0.0), settings.get("on_service_down", "raise")
        )
        self.scoring_config = settings.get("scoring")
        estimator = _estimator(config)
        self.credit = str(settings.get("credit", "record" if estimator == DECOUPLED_ESTIMATOR else "tokens"))
        if self.credit not in ("tokens", "record"):
            raise ValueError(f"reward.mig.credit must be 'tokens' or 'record', got {self.credit!r}")
        if self.credit == "tokens":
            warn_if_collapsing(estimator)
        self._client = client
        self._client_options = {
            key: settings[key]
            for key in ("base_url", "api_key", "deadline_s", "max_retries")
            if key in settings
        }
        self.follow: FollowPolicy | None = None
        if bool(settings.get("follow_policy", False)):
            checkpoint_dir = settings.get("checkpoint_dir") or _trainer_option(config, "default_local_dir")
            if not checkpoint_dir:
                raise ValueError(
                    "reward.mig.follow_policy needs the checkpoint folder: reward.mig.checkpoint_dir or "
                    "trainer.default_local_dir"
                )
            every = settings.get("reload_every_n_steps") or _trainer_option(config, "save_freq") or 0
            self.follow = FollowPolicy(str(checkpoint_dir), int(every), self._reload)

    async def _reload(self, folder: Any) -> Any:
        return await self._service().reload(folder)

    def _service(self) -> AsyncMigClient:
        """The async client, made in the loop that first needs it (httpx binds its pool to that loop)."""
        if self._client is None:
            self._client = AsyncMigClient(**self._client_options)
        return self._client

    async def run_single(self, data: DataProto) -> dict[str, Any]:
        """One sample (the last sequence of ``data``): its :class:`TokenRewards` and extra info."""
        data = data[-1:]
        prompt_ids, response_ids = sample_token_ids(data.batch, 0)
        sample = {key: values[0] for key, values in data.non_tensor_batch.items()}
        source = sample.get("data_source", "verl")
        trace = trace_of_sample(self.tokenizer, prompt_ids, response_ids, sample, f"verl-{source}")
        if trace is None:  # no reasoning text: not a trace, zero rewards
            info = {key: values[0] for key, values in extra_info([None]).items()}
            return {
                "reward_score": self._scores(response_ids, None, [0.0] * len(response_ids)),
                "reward_extra_info": self._follow_info(info, sample, None),
            }
        result: TraceResult
        step = sample_global_step(sample)
        try:
            version = None if self.follow is None else await self.follow.min_version(step)
            (result,) = await self._service().annotate_results(
                [trace], self.scoring_config, min_probe_version=version
            )
        except MigServiceUnavailable as error:
            self.fallback.service_down(error, 1)
            dense = [0.0] * len(response_ids)
            if dense:
                dense[-1] = self.fallback.reward
            info = {"outcome": 0.0, "process_reward": 0.0, "steps": 0.0, "failed": 1.0}
            return {
                "reward_score": self._scores(response_ids, None, dense),
                "reward_extra_info": self._follow_info(info, sample, None),
            }
        if not isinstance(result, TraceAnnotation):
            self.fallback.scores([result], lambda a: 0.0)  # counts and logs it
        rewards = token_rewards(
            self.tokenizer,
            response_ids,
            result,
            outcome_weight=self.outcome_weight,
            process_weight=self.process_weight,
            fallback_reward=self.fallback.reward,
        )
        info = {key: values[0] for key, values in extra_info([result]).items()}
        return {
            "reward_score": self._scores(response_ids, result, rewards.tolist()),
            "reward_extra_info": self._follow_info(info, sample, result),
        }

    def _follow_info(
        self, info: dict[str, Any], sample: Mapping[str, Any], result: TraceResult | None
    ) -> dict[str, Any]:
        """With ``follow_policy``: the sample's ``global_step`` (-1: unknown) and the ``probe_version`` that
        scored it (0: none), the same keys on every sample."""
        if self.follow is None:
            return info
        step = sample_global_step(sample)
        version = result.probe_version if isinstance(result, TraceAnnotation) else None
        known = float(-1 if step is None else step)
        return {**info, "global_step": known, "probe_version": float(version or 0)}

    def _scores(
        self, response_ids: list[int], result: TraceResult | None, dense: list[float]
    ) -> TokenRewards:
        """The sample's ``rm_scores`` row: the dense rewards, or its credit record (``credit: record``)."""
        if self.credit == "tokens":
            return TokenRewards(dense)
        if not isinstance(result, TraceAnnotation):
            return TokenRewards(encode_credit(len(response_ids)).tolist())
        alignment = align_annotation(result, token_offsets(self.tokenizer, response_ids, result.completion))
        record = encode_credit(
            len(response_ids),
            outcome=float(result.outcome),
            step_rewards=[step.reward for step in result.steps],
            step_end_tokens=alignment.step_end_tokens,
            cot_mask=alignment.cot_mask,
            completion_mask=alignment.completion_mask,
        )
        return TokenRewards(record.tolist())

    @classmethod
    def assemble_rm_scores(cls, data: DataProto, scores: list[float]) -> torch.Tensor:
        """``rm_scores``: each :class:`TokenRewards` on its response tokens; a plain float on the last
        valid response token (verl's default placement)."""
        responses = data.batch["responses"]
        prompt_width = data.batch["prompts"].size(1)
        lengths = data.batch["attention_mask"][:, prompt_width:].sum(dim=1).tolist()
        rm_scores = torch.zeros_like(responses, dtype=torch.float32)
        for row, (score, length) in enumerate(zip(scores, lengths, strict=True)):
            length = int(length)
            if isinstance(score, TokenRewards):
                if len(score.dense) != length:
                    raise ValueError(
                        f"rm_scores row {row}: {len(score.dense)} token rewards for {length} response tokens"
                    )
                rm_scores[row, :length] = torch.tensor(score.dense, dtype=torch.float32)
            elif length > 0:
                rm_scores[row, length - 1] = float(score)
        return rm_scores
