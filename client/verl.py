"""verl adapters over the reward service: a ``custom_reward_function`` and a token-level reward manager.

The reward manager places rewards on the policy's tokens with
:func:`mig_annotator.schemas.token_alignment.align_annotation`, the same rule as the builder's token
columns: r_k on the last token overlapping step k, the outcome on the last token of the extracted answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mig_annotator.client.fallback import OnServiceDown, RewardFallback
from mig_annotator.client.http import MigClient, MigServiceUnavailable, TraceFailure, TraceResult
from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.api import RewardScalar
from mig_annotator.schemas.scalar import scalar_reward
from mig_annotator.schemas.token_alignment import placed_rewards, token_offsets
from mig_annotator.schemas.trace import group_id_of, has_text

__all__ = [
    "MigRewardManager",
    "compute_score",
    "compute_score_fallback",
    "extra_info",
    "register_verl_reward_manager",
    "sample_token_ids",
    "token_rewards",
    "trace_of_sample",
]

_shared_clients: dict[tuple[str | None, str | None], MigClient] = {}
_shared_lock = threading.Lock()


def _shared_client(base_url: str | None, api_key: str | None) -> MigClient:
    """One client per (url, key) in a process: verl calls ``compute_score`` once per sample."""
    with _shared_lock:
        key = (base_url, api_key)
        if key not in _shared_clients:
            _shared_clients[key] = MigClient(base_url, api_key=api_key)
        return _shared_clients[key]


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    reward: RewardScalar = "mixed",
    lam: float = 1.0,
    fallback_reward: float = 0.0,
    on_service_down: OnServiceDown = "raise",
    **_: Any,
) -> dict[str, float]:
    """verl's custom reward function: ``{"score", "outcome", "process_reward", "failed"}``.

    The question comes from ``extra_info["question"]`` (verl's data preprocessing puts it there). Extra
    keyword arguments come from ``custom_reward_function.reward_kwargs``. A trace the service cannot score
    gets ``fallback_reward`` (``failed`` 1.0; counted in :data:`compute_score_fallback`); when the service
    stays down, ``on_service_down`` chooses between raising and the fallback reward.
    """
    question = (extra_info or {}).get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(
            "compute_score: extra_info['question'] is required (the problem text); add it in preprocessing"
        )
    if not has_text(solution_str):  # no reasoning text is not a trace (the service refuses it): zero reward
        return {"score": 0.0, "outcome": 0.0, "process_reward": 0.0, "failed": 0.0}
    trace = Trace(
        id=f"verl-{data_source}",
        question=question,
        completion=solution_str,
        reference_answer=str(ground_truth),
    )
    policy = _compute_score_policy(fallback_reward, on_service_down)
    try:
        (result,) = _shared_client(base_url, api_key).annotate_results([trace])
    except MigServiceUnavailable as error:
        (score,) = policy.service_down(error, 1)
        return {"score": score, "outcome": 0.0, "process_reward": 0.0, "failed": 1.0}
    (score,) = policy.scores([result], lambda a: scalar_reward(a, reward, lam))
    if not isinstance(result, TraceAnnotation):
        return {"score": score, "outcome": 0.0, "process_reward": 0.0, "failed": 1.0}
    return {
        "score": score,
        "outcome": float(result.outcome),
        "process_reward": result.process_reward,
        "failed": 0.0,
    }


compute_score_fallback = RewardFallback()
"""The counters of :func:`compute_score`'s fallbacks in this process (``compute_score_fallback.stats()``)."""


def _compute_score_policy(reward: float, on_service_down: OnServiceDown) -> RewardFallback:
    """The shared counters, under this call's fallback reward and policy."""
    compute_score_fallback.reward = float(reward)
    compute_score_fallback.on_service_down = on_service_down
    return compute_score_fallback


def token_rewards(
    tokenizer: Any,
    response_ids: Sequence[int],
    result: TraceResult | None,
    *,
    outcome_weight: float = 1.0,
    process_weight: float = 1.0,
    fallback_reward: float = 0.0,
) -> np.ndarray:
    """One reward per response token (float32): ``process_weight * r_k`` on the last token of step k and
    ``outcome_weight * outcome`` on the last answer token (:mod:`mig_annotator.schemas.token_alignment`);
    a failed trace gets ``fallback_reward`` on its last token (where verl puts a scalar reward); None (a
    response with no text) gets zeros."""
    dense = np.zeros(len(response_ids), dtype=np.float32)
    if not response_ids or result is None:
        return dense
    if not isinstance(result, TraceAnnotation):
        dense[-1] = fallback_reward
        return dense
    offsets = token_offsets(tokenizer, response_ids, result.completion)
    _, dense[:] = placed_rewards(
        result, offsets, process_weight=process_weight, outcome_weight=outcome_weight
    )
    return dense


def trace_of_sample(
    tokenizer: Any,
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    non_tensor: Mapping[str, Any],
    trace_id: str,
) -> Trace | None:
    """The trace of one verl sample: the question from ``extra_info["question"]`` (else the decoded
    prompt), the decoded response, ``reward_model["ground_truth"]`` as the reference, and verl's ``uid``
    (one per prompt, shared by its rollouts) as the group id when the batch has it, so the service keeps
    the group in one probe call. None when the response has no reasoning text (not a trace: the service
    refuses it; its rewards stay zero)."""
    completion = tokenizer.decode(list(response_ids), skip_special_tokens=True)
    if not has_text(completion):
        return None
    info = non_tensor.get("extra_info") or {}
    question = info.get("question") or tokenizer.decode(list(prompt_ids), skip_special_tokens=True)
    reward_model = non_tensor.get("reward_model") or {}
    if "ground_truth" not in reward_model:
        raise ValueError(f"{trace_id}: non_tensor_batch['reward_model'] has no 'ground_truth'")
    return Trace(
        id=trace_id,
        question=question,
        completion=completion,
        reference_answer=str(reward_model["ground_truth"]),
        group_id=_group_id(non_tensor.get("uid")),
    )


def _group_id(uid: Any) -> str | None:
    """verl's ``uid`` (a UUID string; numpy scalars and other types by their text) as a group id."""
    if uid is None:
        return None
    return group_id_of(uid if isinstance(uid, str | int) and not isinstance(uid, bool) else str(uid))


def sample_token_ids(batch: Any, index: int) -> tuple[list[int], list[int]]:
    """The prompt's and the response's real (unpadded) token ids of row ``index`` of a verl batch
    (``prompts`` left-padded, ``responses`` right-padded, ``attention_mask`` over both)."""
    prompts, responses, attention = batch["prompts"], batch["responses"], batch["attention_mask"]
    width = prompts.shape[-1]
    prompt_length = int(attention[index, :width].sum())
    response_length = int(attention[index, width:].sum())
    return prompts[index, width - prompt_length :].tolist(), responses[index, :response_length].tolist()


class MigRewardManager:
    """A verl reward manager (the legacy ``AbstractRewardManager`` form): token-level MIG rewards.

    ``reward_tensor[i, t]`` holds ``process_weight * r_k`` on the last token overlapping step k and
    ``outcome_weight * outcome`` on the last token of the extracted answer, in the policy tokenizer's
    tokens (:func:`token_rewards`). A trace the service cannot score gets ``fallback.reward`` on its last
    token; ``fallback.on_service_down`` says what a service outage does. Same constructor and call as
    verl's ``AbstractRewardManager``; register it with ``register_verl_reward_manager()``. verl 0.9's
    reward loop uses :class:`mig_annotator.client.verl_reward_loop.MigRewardLoopManager` instead.
    """

    def __init__(
        self,
        tokenizer: Any,
        num_examine: int = 0,
        compute_score: Callable[..., Any] | None = None,
        reward_fn_key: str = "data_source",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        outcome_weight: float = 1.0,
        process_weight: float = 1.0,
        client: MigClient | None = None,
        config: Mapping[str, Any] | None = None,
        fallback_reward: float = 0.0,
        on_service_down: OnServiceDown = "raise",
        **_: Any,
    ) -> None:
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.reward_fn_key = reward_fn_key
        self.outcome_weight = outcome_weight
        self.process_weight = process_weight
        self.config = config
        self.fallback = RewardFallback(fallback_reward, on_service_down)
        self._client = client or _shared_client(base_url, api_key)

    def __call__(self, data: Any, return_dict: bool = False) -> Any:
        import torch  # verl has it loaded; the client package itself does not depend on torch

        if "rm_scores" in data.batch.keys():  # noqa: SIM118 - TensorDict refuses `in` on itself
            scores = data.batch["rm_scores"]
            return {"reward_tensor": scores, "reward_extra_info": {}} if return_dict else scores
        responses = data.batch["responses"]
        sources = data.non_tensor_batch.get(self.reward_fn_key)
        response_ids: list[list[int]] = []
        traces: list[Trace | None] = []  # None: no reasoning text, not a trace; its row stays zero
        for i in range(responses.shape[0]):
            prompt_ids, ids = sample_token_ids(data.batch, i)
            response_ids.append(ids)
            sample = {key: values[i] for key, values in data.non_tensor_batch.items()}
            source = sources[i] if sources is not None else "batch"
            traces.append(trace_of_sample(self.tokenizer, prompt_ids, ids, sample, f"verl-{source}-{i}"))
        reward_tensor = torch.zeros(responses.shape, dtype=torch.float32)
        sent = [trace for trace in traces if trace is not None]
        try:
            answers: list[TraceResult] = self._client.annotate_results(sent, self.config) if sent else []
        except MigServiceUnavailable as error:
            self.fallback.service_down(error, len(sent))
            answers = [_down(i) for i in range(len(sent))]
        else:
            self.fallback.scores(answers, lambda a: 0.0)  # counts and logs the failed traces
        given = iter(answers)
        results = [next(given) if trace is not None else None for trace in traces]
        for i, (ids, result) in enumerate(zip(response_ids, results, strict=True)):
            dense = token_rewards(
                self.tokenizer,
                ids,
                result,
                outcome_weight=self.outcome_weight,
                process_weight=self.process_weight,
                fallback_reward=self.fallback.reward,
            )
            reward_tensor[i, : len(ids)] = torch.from_numpy(dense)
        if not return_dict:
            return reward_tensor
        return {"reward_tensor": reward_tensor, "reward_extra_info": extra_info(results)}


def extra_info(results: Sequence[TraceResult | None]) -> dict[str, list[float]]:
    """Per-sample logs: outcome, process reward, step count, and whether the trace failed (None: a
    response with no text, zero everywhere)."""
    annotations = [r if isinstance(r, TraceAnnotation) else None for r in results]
    return {
        "outcome": [0.0 if a is None else float(a.outcome) for a in annotations],
        "process_reward": [0.0 if a is None else a.process_reward for a in annotations],
        "steps": [0.0 if a is None else float(len(a.steps)) for a in annotations],
        "failed": [float(isinstance(r, TraceFailure)) for r in results],
    }


def _down(index: int) -> TraceFailure:
    return TraceFailure(
        index=index, field=f"traces[{index}]", message="the service is unavailable", code="deadline_exceeded"
    )


def register_verl_reward_manager(name: str = "mig") -> type[MigRewardManager]:
    """Register :class:`MigRewardManager` with verl under ``name`` (needs verl installed)."""
    from verl.workers.reward_manager import register  # type: ignore[import-not-found]

    return register(name)(MigRewardManager)  # type: ignore[no-any-return]
