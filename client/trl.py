"""A reward function for TRL's ``GRPOTrainer(reward_funcs=[...])`` over the reward service."""

from __future__ import annotations

import itertools
import math
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, get_args

from mig_annotator.client.fallback import RewardFallback
from mig_annotator.client.http import AsyncMigClient, MigClient, MigServiceUnavailable
from mig_annotator.schemas import Trace
from mig_annotator.schemas.api import RewardScalar
from mig_annotator.schemas.scalar import scalar_reward
from mig_annotator.schemas.trace import has_text

__all__ = ["OnFailure", "async_trl_reward_function", "trl_reward_function"]

#: What an unscorable completion gets: "fallback" (``RewardFallback.reward``; 0.0 for one with no text)
#: or "nan" (TRL leaves NaN rewards out of its sums and its group statistics: no penalty, no credit).
OnFailure = Literal["fallback", "nan"]


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
    on_failure: OnFailure = "fallback",
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
    ``on_failure="nan"``: an unscorable completion (a trace failure, no text, or every completion of a
    call when the service is down and ``on_service_down="fallback"``) gets NaN instead. A completion for
    which every reward function gives NaN is left out of TRL's group mean and std and gets advantage 0
    (TRL >= 1.0; with other reward functions, TRL's ``nansum`` counts a NaN as 0): neither penalised nor
    credited. The counters still count it. The given ``fallback``'s reward must then be 0.0 or NaN (it
    is set to NaN).

    The traces carry no ``group_id``: TRL passes no group label, and the ``num_generations`` completions
    of a prompt come one after another with the same question text, which is the service's group key
    for traces without one. A label derived from the prompt would add nothing, and one from the whole
    prompt (system turns included) could only split traces whose probe prompt is the same.
    """
    policy, missing = _failure_policy(fallback, on_failure)
    client = client or MigClient()
    traces_of = _trace_builder(reward, answer_column, reference_transform)

    def reward_func(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        traces = traces_of(prompts, completions, kwargs)
        sent = [trace for trace in traces if trace is not None]
        if not sent:
            return [missing] * len(traces)
        try:
            results = client.annotate_results(sent, config)
        except MigServiceUnavailable as error:
            return _in_place(traces, policy.service_down(error, len(sent)), missing)
        return _in_place(traces, policy.scores(results, lambda a: scalar_reward(a, reward, lam)), missing)

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
    on_failure: OnFailure = "fallback",
) -> Callable[..., Awaitable[list[float]]]:
    """As :func:`trl_reward_function`, as an ``async def`` (TRL runs async reward functions concurrently
    on its own event loop). Without ``client``, an :class:`AsyncMigClient` (``client_options``) is made on
    the first call, inside TRL's loop."""
    policy, missing = _failure_policy(fallback, on_failure)
    traces_of = _trace_builder(reward, answer_column, reference_transform)
    holder: list[AsyncMigClient] = [client] if client is not None else []

    async def reward_func(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        traces = traces_of(prompts, completions, kwargs)
        sent = [trace for trace in traces if trace is not None]
        if not sent:
            return [missing] * len(traces)
        if not holder:
            holder.append(AsyncMigClient(**dict(client_options or {})))
        try:
            results = await holder[0].annotate_results(sent, config)
        except MigServiceUnavailable as error:
            return _in_place(traces, policy.service_down(error, len(sent)), missing)
        return _in_place(traces, policy.scores(results, lambda a: scalar_reward(a, reward, lam)), missing)

    reward_func.__name__ = f"mig_{reward}_async"
    reward_func.fallback = policy  # type: ignore[attr-defined]
    return reward_func


def _failure_policy(fallback: RewardFallback | None, on_failure: OnFailure) -> tuple[RewardFallback, float]:
    """The fallback policy to use and the reward of a completion with no text, for ``on_failure``."""
    if on_failure not in get_args(OnFailure):
        raise ValueError(f"on_failure must be one of {get_args(OnFailure)}, got {on_failure!r}")
    policy = fallback or RewardFallback()
    if on_failure == "fallback":
        return policy, 0.0
    if not (math.isnan(policy.reward) or policy.reward == 0.0):
        raise ValueError(
            f'on_failure="nan" gives unscorable completions NaN, but the fallback reward is {policy.reward}: '
            "pass one of the two"
        )
    policy.reward = math.nan
    return policy, math.nan


def _in_place(traces: Sequence[Trace | None], rewards: Sequence[float], missing: float) -> list[float]:
    """The rewards of the traces sent, in their places; ``missing`` for a completion with no text."""
    given = iter(rewards)
    return [next(given) if trace is not None else missing for trace in traces]


def _trace_builder(
    reward: RewardScalar, answer_column: str, reference_transform: Callable[[str], str] | None
) -> Callable[[Sequence[Any], Sequence[Any], Mapping[str, Any]], list[Trace | None]]:
    """Checks the options once; the returned function turns TRL's batch into traces (None for a
    completion with no reasoning text: the service refuses it, so it gets 0.0 without a call).

    Trace ids are unique across a run's batches, steps and processes, so the service's audit log can tell
    them apart: ``trl-<run>-p<process>-s<step>-b<batch>-<index>``, with a random run nonce drawn here, the
    process rank (``RANK``, set by torchrun and accelerate; 0 alone), TRL's global step, and a count of
    the batches this function has seen (a step may hold several).
    """
    if reward not in get_args(RewardScalar):
        raise ValueError(f"reward must be one of {get_args(RewardScalar)}, got {reward!r}")
    run = secrets.token_hex(4)
    batches = itertools.count()

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
        step = getattr(kwargs.get("trainer_state"), "global_step", 0)
        batch = f"trl-{run}-p{os.environ.get('RANK', '0')}-s{step}-b{next(batches)}"
        return [
            Trace(
                id=f"{batch}-{index}",
                question=_message_text(prompts[index], "user"),
                completion=text,
                reference_answer=references[index],
            )
            if has_text(text)
            else None
            for index, text in enumerate(texts)
        ]

    return traces_of
