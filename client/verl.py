"""verl adapters over the reward service: a ``custom_reward_function`` and a token-level reward manager.

The reward manager places rewards on the policy's tokens with
:func:`mig_annotator.schemas.token_alignment.align_annotation`, the same rule as the builder's token
columns: r_k on the last token overlapping step k, the outcome on the last token of the extracted answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from mig_annotator.client.http import MigClient
from mig_annotator.schemas import Trace
from mig_annotator.schemas.api import RewardScalar
from mig_annotator.schemas.scalar import scalar_reward
from mig_annotator.schemas.token_alignment import align_annotation, token_offsets
from mig_annotator.schemas.trace import has_text

__all__ = ["MigRewardManager", "compute_score", "register_verl_reward_manager"]

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
    **_: Any,
) -> dict[str, float]:
    """verl's custom reward function: ``{"score": ..., "outcome": ..., "process_reward": ...}``.

    The question comes from ``extra_info["question"]`` (verl's data preprocessing puts it there). Extra
    keyword arguments come from ``custom_reward_function.reward_kwargs``.
    """
    question = (extra_info or {}).get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(
            "compute_score: extra_info['question'] is required (the problem text); add it in preprocessing"
        )
    if not has_text(solution_str):  # no reasoning text is not a trace (the service refuses it): zero reward
        return {"score": 0.0, "outcome": 0.0, "process_reward": 0.0}
    trace = Trace(
        id=f"verl-{data_source}",
        question=question,
        completion=solution_str,
        reference_answer=str(ground_truth),
    )
    (annotation,) = _shared_client(base_url, api_key).annotate([trace])
    return {
        "score": scalar_reward(annotation, reward, lam),
        "outcome": float(annotation.outcome),
        "process_reward": annotation.process_reward,
    }


class MigRewardManager:
    """A verl reward manager: token-level MIG rewards from the service.

    ``reward_tensor[i, t]`` holds ``process_weight * r_k`` on the last token overlapping step k and
    ``outcome_weight * outcome`` on the last token of the extracted answer, in the policy tokenizer's
    tokens (the rule of :mod:`mig_annotator.schemas.token_alignment`). Same constructor and call as
    verl's ``AbstractRewardManager``; register it with ``register_verl_reward_manager()``.
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
        **_: Any,
    ) -> None:
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.reward_fn_key = reward_fn_key
        self.outcome_weight = outcome_weight
        self.process_weight = process_weight
        self.config = config
        self._client = client or _shared_client(base_url, api_key)

    def __call__(self, data: Any, return_dict: bool = False) -> Any:
        import torch  # verl has it loaded; the client package itself does not depend on torch

        if "rm_scores" in data.batch.keys():  # noqa: SIM118 - TensorDict refuses `in` on itself
            scores = data.batch["rm_scores"]
            return {"reward_tensor": scores, "reward_extra_info": {}} if return_dict else scores
        prompts, responses = data.batch["prompts"], data.batch["responses"]
        attention = data.batch["attention_mask"]
        prompt_width = prompts.shape[-1]
        response_lengths = attention[:, prompt_width:].sum(dim=-1).tolist()
        prompt_lengths = attention[:, :prompt_width].sum(dim=-1).tolist()
        extra = data.non_tensor_batch.get("extra_info")
        sources = data.non_tensor_batch.get(self.reward_fn_key)
        response_ids: list[list[int]] = []
        traces: list[Trace | None] = []  # None: no reasoning text, so not a trace; its row stays zero
        for i in range(responses.shape[0]):
            ids = responses[i, : int(response_lengths[i])].tolist()
            response_ids.append(ids)
            completion = self.tokenizer.decode(ids, skip_special_tokens=True)
            if not has_text(completion):
                traces.append(None)
                continue
            info = extra[i] if extra is not None and extra[i] is not None else {}
            question = info.get("question") or self.tokenizer.decode(
                prompts[i, prompt_width - int(prompt_lengths[i]) :].tolist(), skip_special_tokens=True
            )
            traces.append(
                Trace(
                    id=f"verl-{sources[i] if sources is not None else 'batch'}-{i}",
                    question=question,
                    completion=completion,
                    reference_answer=str(data.non_tensor_batch["reward_model"][i]["ground_truth"]),
                )
            )
        sent = [trace for trace in traces if trace is not None]
        scored = iter(self._client.annotate(sent, self.config) if sent else [])
        annotations = [next(scored) if trace is not None else None for trace in traces]
        reward_tensor = torch.zeros(responses.shape, dtype=torch.float32)
        for i, (ids, annotation) in enumerate(zip(response_ids, annotations, strict=True)):
            if not ids or annotation is None:
                continue
            alignment = align_annotation(
                annotation, token_offsets(self.tokenizer, ids, annotation.completion)
            )
            dense = alignment.rewards(
                annotation.outcome, process_weight=self.process_weight, outcome_weight=self.outcome_weight
            )
            reward_tensor[i, : len(ids)] = torch.from_numpy(dense)
        if not return_dict:
            return reward_tensor
        return {
            "reward_tensor": reward_tensor,
            "reward_extra_info": {
                "outcome": [float(a.outcome) if a else 0.0 for a in annotations],
                "process_reward": [a.process_reward if a else 0.0 for a in annotations],
                "steps": [float(len(a.steps)) if a else 0.0 for a in annotations],
            },
        }


def register_verl_reward_manager(name: str = "mig") -> type[MigRewardManager]:
    """Register :class:`MigRewardManager` with verl under ``name`` (needs verl installed)."""
    from verl.workers.reward_manager import register  # type: ignore[import-not-found]

    return register(name)(MigRewardManager)  # type: ignore[no-any-return]
