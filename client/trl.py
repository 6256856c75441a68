"""A reward function for TRL's ``GRPOTrainer(reward_funcs=[...])`` over the reward service."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

from mig_annotator.client.http import MigClient
from mig_annotator.schemas import Trace
from mig_annotator.schemas.api import RewardScalar
from mig_annotator.schemas.scalar import scalar_reward
from mig_annotator.schemas.trace import has_text

__all__ = ["trl_reward_function"]


def _message_text(value: Any, role: str | None) -> str:
    """A plain string, or the content of a conversation's messages (the last one of ``role`` if given)."""
    if isinstance(value, str):
        return value
    messages = [m for m in value if role is None or m.get("role") == role] or list(value)
    if role is not None:
        return str(messages[-1]["content"])
    return "".join(str(m["content"]) for m in messages)


def trl_reward_function(
    client: MigClient | None = None,
    *,
    reward: RewardScalar = "mixed",
    lam: float = 1.0,
    answer_column: str = "answer",
    reference_transform: Callable[[str], str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Callable[..., list[float]]:
    """A TRL ``GRPOTrainer`` reward function: one float per completion.

    ``reward``: outcome (0/1), process (sum of step rewards) or mixed (outcome + lam * process).
    The reference answer comes from the dataset column ``answer_column`` (TRL passes columns as keyword
    arguments); ``reference_transform`` may extract it (GSM8K: ``lambda s: s.split("####")[-1].strip()``).
    Standard (string) and conversational (list of messages) prompts and completions both work; the
    question is the prompt's last user message.
    """
    client = client or MigClient()
    kind: RewardScalar = reward
    if kind not in get_args(RewardScalar):
        raise ValueError(f"reward must be one of {get_args(RewardScalar)}, got {kind!r}")

    def reward_func(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if answer_column not in kwargs:
            columns = sorted(k for k in kwargs if k not in ("trainer_state", "completion_ids"))
            raise ValueError(
                f"trl_reward_function: the dataset has no column {answer_column!r} (columns: {columns}); "
                "pass answer_column=..."
            )
        references = [str(value) for value in kwargs[answer_column]]
        if reference_transform is not None:
            references = [reference_transform(value) for value in references]
        texts = [_message_text(completion, None) for completion in completions]
        if len(references) != len(texts) or len(prompts) != len(texts):
            raise ValueError("prompts, completions and the answer column must have equal lengths")
        # no reasoning text is not a trace (the service refuses it): zero reward, not a failed batch
        scored = [index for index, text in enumerate(texts) if has_text(text)]
        traces = [
            Trace(
                id=f"trl-{index}",
                question=_message_text(prompts[index], "user"),
                completion=texts[index],
                reference_answer=references[index],
            )
            for index in scored
        ]
        rewards = [0.0] * len(texts)
        if traces:
            for index, annotation in zip(scored, client.annotate(traces, config), strict=True):
                rewards[index] = scalar_reward(annotation, kind, lam)
        return rewards

    reward_func.__name__ = f"mig_{reward}"
    return reward_func
