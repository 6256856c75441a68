"""Step-wise Marginal Information Gain (MIG) rewards.

A probe LM scores a reasoning trace with question ``x``, steps ``s_1..s_K`` and reference answer ``a``.
For every prefix ``k = 0..K`` it teacher-forces the answer and aggregates the answer-token log-probs:

    v_k = agg_t log P(a_t | x, s_1..s_k, a_<t),    agg = mean (default) or sum over the n answer tokens

From the value trajectory ``v_0..v_K`` this module derives

* marginal gains        ``mig_k = v_k - v_{k-1}``                                  (k = 1..K)
* level watermark       ``W_0 = v_0``, ``W_k = max(W_{k-1}, v_k)``
                        ``r_k = max(0, v_k - W_{k-1})``                            (default)
  which telescopes:     ``sum_k r_k = W_K - v_0 = max(v) - v_0``
* gain watermark        ``G_k = max(mig_1..mig_k)``, ``G_0 = 0`` (empty max)
                        ``r_k = max(0, mig_k - G_{k-1})``                          (``watermark="gain"``)

plus the outcome reward (math-aware answer equivalence via ``math-verify``) and the dual SFT gate
``outcome == 1 and max_k r_k > threshold`` (``sum_k r_k`` as an option).

Everything except :func:`outcome_reward` is pure numpy and vectorised.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mig_annotator.schemas.config import Aggregation, WatermarkKind
from mig_annotator.schemas.scalar import sft_gate  # the one rule; re-exported for the engine

__all__ = [
    "MATH_VERIFY_TIMEOUT_S",
    "Aggregation",
    "StepRewards",
    "WatermarkKind",
    "aggregate_logprobs",
    "level_watermark",
    "marginal_gains",
    "outcome_reward",
    "reaggregate_values",
    "sft_gate",
    "step_rewards",
]


#: Per-call timeout (seconds) handed to math-verify's ``parse``/``verify`` when called from the main
#: thread. math-verify implements timeouts with ``signal.alarm``, which raises ``ValueError`` outside the
#: main thread, so in any other thread the timeout is disabled (``None``) instead. See :func:`outcome_reward`.
MATH_VERIFY_TIMEOUT_S: int = 5


# --------------------------------------------------------------------------------------------------------
# Value trajectory
# --------------------------------------------------------------------------------------------------------


def aggregate_logprobs(token_logprobs: np.ndarray, aggregation: Aggregation = "mean") -> np.ndarray:
    """Aggregate teacher-forced answer-token log-probs into the value trajectory ``v``.

    ``token_logprobs[k, t] = log P(a_t | x, s_1..s_k, a_<t)`` for prefix ``k = 0..K`` and answer token
    ``t = 1..n``. Returns ``v`` of shape ``(K+1,)`` (float64) with

        mean:  v_k = (1/n) * sum_t token_logprobs[k, t]
        sum:   v_k =         sum_t token_logprobs[k, t]

    Raises ``ValueError`` if the input is not 2-D, has no rows (no ``v_0``), has ``n < 1`` answer tokens,
    or ``aggregation`` is unknown.
    """
    lp = np.asarray(token_logprobs, dtype=np.float64)
    if lp.ndim != 2:
        raise ValueError(f"token_logprobs must be 2-D (K+1, n_answer_tokens), got shape {lp.shape}")
    if lp.shape[0] < 1:
        raise ValueError("token_logprobs must have at least one row (the k=0 prefix), got 0")
    if lp.shape[1] < 1:
        raise ValueError("token_logprobs must have n_answer_tokens >= 1, got 0")
    if aggregation == "mean":
        return lp.mean(axis=1)
    if aggregation == "sum":
        return lp.sum(axis=1)
    raise ValueError(f"aggregation must be 'mean' or 'sum', got {aggregation!r}")


def reaggregate_values(
    v: ArrayLike, answer_tokens: int, source: Aggregation, target: Aggregation
) -> np.ndarray:
    """The value trajectory ``v`` aggregated with ``source`` over ``answer_tokens`` answer tokens, turned
    into the one :func:`aggregate_logprobs` gives with ``target``: ``sum = n * mean``, ``mean = sum / n``.

    Every prefix reads the same answer, so ``n`` is one number per trace. ``sum -> mean`` is exactly
    NumPy's mean (a sum divided by ``n``); ``mean -> sum`` agrees with the summed log-probs to rounding
    (a few ulps). Raises ``ValueError`` for ``answer_tokens < 1`` or an unknown aggregation.
    """
    arr = np.asarray(v, dtype=np.float64)
    if answer_tokens < 1:
        raise ValueError(f"answer_tokens must be >= 1, got {answer_tokens}")
    for name, aggregation in (("source", source), ("target", target)):
        if aggregation not in ("mean", "sum"):
            raise ValueError(f"{name} aggregation must be 'mean' or 'sum', got {aggregation!r}")
    if source == target:
        return arr.copy()
    return arr * answer_tokens if target == "sum" else arr / answer_tokens


def _as_values(v: ArrayLike) -> np.ndarray:
    """Validate ``v`` as a finite 1-D float64 array with ``len(v) >= 1`` (i.e. ``K >= 0``)."""
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"v must be 1-D (v_0..v_K), got shape {arr.shape}")
    if arr.size < 1:
        raise ValueError("v must contain at least v_0 (len(v) >= 1), got an empty array")
    if not np.all(np.isfinite(arr)):
        raise ValueError("v must be finite (no NaN or +/-inf)")
    return arr


def marginal_gains(v: ArrayLike) -> np.ndarray:
    """Marginal information gain of each step: ``mig_k = v_k - v_{k-1}`` for ``k = 1..K``; shape ``(K,)``."""
    return np.diff(_as_values(v))


def level_watermark(v: ArrayLike) -> np.ndarray:
    """Level watermark (running maximum of ``v``): ``W_0 = v_0``, ``W_k = max(W_{k-1}, v_k)``; ``(K+1,)``."""
    return np.maximum.accumulate(_as_values(v))


# --------------------------------------------------------------------------------------------------------
# Step rewards
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class StepRewards:
    """Per-step MIG quantities for one trace with ``K`` steps (all arrays have shape ``(K,)``).

    * ``mig[k-1]``       = ``mig_k = v_k - v_{k-1}``
    * ``watermark[k-1]`` = level: ``W_k = max(v_0..v_k)``; gain: ``max(mig_1..mig_k)``
    * ``reward[k-1]``    = ``r_k >= 0``

    The arrays are stored as read-only float64 copies. ``eq=False``: instances compare by identity
    (element-wise array equality has no single truth value).
    """

    mig: np.ndarray
    watermark: np.ndarray
    reward: np.ndarray

    def __post_init__(self) -> None:
        shape = None
        for name in ("mig", "watermark", "reward"):
            arr = np.array(getattr(self, name), dtype=np.float64, copy=True)
            if arr.ndim != 1:
                raise ValueError(f"StepRewards.{name} must be 1-D, got shape {arr.shape}")
            if shape is not None and arr.shape != shape:
                raise ValueError(f"StepRewards arrays must share one shape, got {shape} and {arr.shape}")
            shape = arr.shape
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def num_steps(self) -> int:
        """``K``, the number of steps."""
        return int(self.reward.shape[0])

    @property
    def process_reward(self) -> float:
        """Trace-level process reward ``sum_k r_k`` (0.0 when ``K == 0``).

        For the level watermark this equals ``max(v) - v_0``.
        """
        return float(np.sum(self.reward))

    @property
    def max_reward(self) -> float:
        """Largest single-step reward ``max_k r_k`` (0.0 when ``K == 0``)."""
        return float(np.max(self.reward)) if self.reward.size else 0.0


def step_rewards(v: ArrayLike, watermark: WatermarkKind = "level") -> StepRewards:
    """Compute watermarked step rewards from the value trajectory ``v = (v_0..v_K)``.

    ``mig_k = v_k - v_{k-1}`` for ``k = 1..K``, then

    level (default):
        ``W_0 = v_0``, ``W_k = max(W_{k-1}, v_k)``, ``r_k = max(0, v_k - W_{k-1})``.
        Only a step that sets a new strict maximum of ``v`` is rewarded, by how much it raises it, so
        ``sum_k r_k = W_K - v_0 = max(v) - v_0`` (telescoping: ``r_k = W_k - W_{k-1}``).
        Reported watermark: ``W_k`` for ``k = 1..K``.

    gain:
        ``G_k = max(mig_1..mig_k)``, ``G_0 = 0`` (empty max), ``r_k = max(0, mig_k - G_{k-1})``;
        so ``r_1 = max(0, mig_1)``. Reported watermark: ``G_k`` for ``k = 1..K``.
        Note: for ``k >= 2`` the bar ``G_{k-1}`` is the raw max of earlier gains, which can be negative;
        a step with ``mig_k < 0`` is then still rewarded if it is less negative than every earlier gain
        (e.g. ``mig = (-2, -1)`` gives ``r = (0, 1)``).

    ``v`` must be 1-D, finite, with ``len(v) >= 1``; ``K = 0`` yields empty arrays. Raises ``ValueError``
    otherwise or for an unknown ``watermark``.
    """
    arr = _as_values(v)
    mig = np.diff(arr)
    if watermark == "level":
        level = np.maximum.accumulate(arr)
        reward = np.maximum(0.0, arr[1:] - level[:-1])
        mark = level[1:]
    elif watermark == "gain":
        mark = np.maximum.accumulate(mig)
        bar = np.concatenate(([0.0], mark[:-1]))
        reward = np.maximum(0.0, mig - bar)
    else:
        raise ValueError(f"watermark must be 'level' or 'gain', got {watermark!r}")
    return StepRewards(mig=mig, watermark=mark, reward=reward)


# --------------------------------------------------------------------------------------------------------
# Outcome reward and SFT gate
# --------------------------------------------------------------------------------------------------------


def _math_verify_timeout() -> int | None:
    """Timeout for math-verify: signal-based timeouts only work in the main thread, so disable elsewhere."""
    if threading.current_thread() is threading.main_thread():
        return MATH_VERIFY_TIMEOUT_S
    return None


def _parse_answer(text: str, timeout: int | None) -> list[Any]:
    """Parse an answer string with math-verify, trying the text as-is and wrapped in ``$...$``.

    Bare LaTeX such as ``\\dfrac{1}{2}``, ``\\sqrt{2}``, ``10^{3}`` or ``\\$18`` only parses (correctly)
    inside math delimiters, so undelimited text is tried wrapped first; text that already carries ``$`` or
    ``\\boxed`` is tried as-is first. The first non-empty parse wins.
    """
    from math_verify import parse

    text = text.strip()
    if not text:
        return []
    wrapped = f"${text}$"
    variants = (text, wrapped) if ("$" in text or "\\boxed" in text) else (wrapped, text)
    for variant in variants:
        parsed = parse(variant, parsing_timeout=timeout)
        if parsed:
            return list(parsed)
    return []


def outcome_reward(predicted_answer: str | None, reference_answer: str) -> int:
    """Outcome reward: ``1`` if the predicted final answer equals the reference under math-aware
    equivalence (``math_verify.verify(parse(gold), parse(pred))``, gold first), else ``0``.

    ``None``/blank predictions and answers that math-verify cannot parse give ``0``. Examples that hold:
    ``"18" == "18.0" == "$18" == "\\boxed{18}"``, ``"1,000" == "1000"``, ``"\\frac{1}{2}" == "0.5"``,
    ``"18" != "19"``.

    Threads: math-verify's timeouts use ``signal.alarm`` and raise ``ValueError`` outside the main thread.
    In the main thread :data:`MATH_VERIFY_TIMEOUT_S` is used (a timeout counts as ``0``); in other threads
    the timeout is disabled (``None``), so callers running this in workers must bound pathological inputs
    (e.g. ``10^{10^{10^{10}}}``) themselves.
    """
    if predicted_answer is None or not predicted_answer.strip():
        return 0
    from math_verify import verify

    timeout = _math_verify_timeout()
    gold = _parse_answer(reference_answer, timeout)
    if not gold:
        return 0
    pred = _parse_answer(predicted_answer, timeout)
    if not pred:
        return 0
    return int(bool(verify(gold, pred, timeout_seconds=timeout)))
