"""A reward function for TRL's ``GRPOTrainer(reward_funcs=[...])`` over the reward service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, get_args

from mig_annotator.client.fallback import RewardFallback
from mig_annotator.client.http import AsyncMigClient, MigClient, MigServiceUnavailable
from mig_annotator.schemas import Trace
from mig_annotator.schemas.api import RewardScalar
from mig_annotator.schemas.scalar import scalar_reward
from mig_annotator.schemas.trace import has_text

__all__ = ["async_trl_reward_function", "trl_reward_function"]


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
    fallback: RewardFallback | None = None,
) -> Callable[..., list[float]]:
    """A TRL ``GRPOTrainer`` reward function: one float per completion.

    ``reward``: outcome (0/1), process (sum of step rewards) or mixed (outcome + lam * process).
    The reference answer comes from the dataset column ``answer_column`` (TRL passes columns as keyword
    arguments); ``reference_transform`` may extract it (GSM8K: ``lambda s: s.split("####")[-1].strip()``).
    Standard (string) and conversational (list of messages) prompts and completions both work; the
    question is the prompt's last user message. A completion the service cannot score gets
    ``fallback.reward``; when the service stays down, ``fallback.on_service_down`` says whether the step
    fails or every completion gets the fallback reward. The function's ``fallback`` attribute holds the
    policy and its counters (``reward_func.fallback.stats()``) for the trainer's logs.

    The traces carry no ``group_id``: TRL passes no group label, and the ``num_generations`` completions
    of a prompt come one after another with the same question text, which is the service's group key
    for traces without one. A label derived from the prompt would add nothing, and one from the whole
    prompt (system turns included) could only split traces whose probe prompt is the same.
    """
    client = client or MigClient()
    policy = fallback or RewardFallback()
    traces_of = _trace_builder(reward, answer_column, reference_transform)

    def reward_func(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        traces = traces_of(prompts, completions, kwargs)
        sent = [trace for trace in traces if trace is not None]
        if not sent:
            return [0.0] * len(traces)
        try:
            results = client.annotate_results(sent, config)
        except MigServiceUnavailable as error:
            return _in_place(traces, policy.service_down(error, len(sent)))
        return _in_place(traces, policy.scores(results, lambda a: scalar_reward(a, reward, lam)))

    reward_func.__name__ = f"mig_{reward}"
    reward_func.fallback = policy  # type: ignore[attr-defined]
    return reward_func


def async_trl_reward_function(
    client: AsyncMigClient | None = None,
    *,
    reward: RewardScalar = "mixed",
    lam: float = 1.0,
    answer_column: str = "answer",
    reference_transform: Callable[[str], str] | None = None,
    config: Mapping[str, Any] | None = None,
    fallback: RewardFallback | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> Callable[..., Awaitable[list[float]]]:
    """As :func:`trl_reward_function`, as an ``async def`` (TRL runs async reward functions concurrently
    on its own event loop). Without ``client``, an :class:`AsyncMigClient` (``client_options``) is made on
    the first call, inside TRL's loop."""
    policy = fallback or RewardFallback()
    traces_of = _trace_builder(reward, answer_column, reference_transform)
    holder: list[AsyncMigClient] = [client] if client is not None else []

    async def reward_func(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        traces = traces_of(prompts, completions, kwargs)
        sent = [trace for trace in traces if trace is not None]
        if not sent:
            return [0.0] * len(traces)
        if not holder:
            holder.append(AsyncMigClient(**dict(client_options or {})))
        try:
            results = await holder[0].annotate_results(sent, config)
        except MigServiceUnavailable as error:
            return _in_place(traces, policy.service_down(error, len(sent)))
        return _in_place(traces, policy.scores(results, lambda a: scalar_reward(a, reward, lam)))

    reward_func.__name__ = f"mig_{reward}_async"
    reward_func.fallback = policy  # type: ignore[attr-defined]
    return reward_func


def _in_place(traces: Sequence[Trace | None], rewards: Sequence[float]) -> list[float]:
    """The rewards of the traces sent, in their places; 0.0 for a completion with no text (no trace)."""
    given = iter(rewards)
    return [next(given) if trace is not None else 0.0 for trace in traces]


def _trace_builder(
    reward: RewardScalar, answer_column: str, reference_transform: Callable[[str], str] | None
) -> Callable[[Sequence[Any], Sequence[Any], Mapping[str, Any]], list[Trace | None]]:
    """Checks the options once; the returned function turns TRL's batch into traces (None for a
    completion with no reasoning text: the service refuses it, so it gets 0.0 without a call)."""
    if reward not in get_args(RewardScalar):
        raise ValueError(f"reward must be one of {get_args(RewardScalar)}, got {reward!r}")

    def traces_of(
        prompts: Sequence[Any], completions: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> list[Trace | None]:
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
        return [
            Trace(
                id=f"trl-{index}",
                question=_message_text(prompts[index], "user"),
                completion=text,
                reference_answer=references[index],
            )
            if has_text(text)
            else None
            for index, text in enumerate(texts)
        ]

    return traces_of
