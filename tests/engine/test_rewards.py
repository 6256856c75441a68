"""Tests for mig.rewards: MIG step rewards, outcome reward and the SFT gate."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mig_annotator.engine import rewards
from mig_annotator.engine.rewards import (
    StepRewards,
    aggregate_logprobs,
    level_watermark,
    marginal_gains,
    outcome_reward,
    sft_gate,
    step_rewards,
)

finite = st.floats(min_value=-100.0, max_value=100.0, allow_nan=False, allow_infinity=False)
values = arrays(np.float64, st.integers(min_value=1, max_value=30), elements=finite)
# Many ties / repeated values to exercise the strict-maximum edge cases.
coarse_values = arrays(
    np.float64,
    st.integers(min_value=1, max_value=20),
    elements=st.sampled_from([-3.0, -2.0, -1.5, -1.0, 0.0]),
)
any_values = st.one_of(values, coarse_values)


def gain_reference(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loop form of the gain watermark: r_k = max(0, mig_k - max(mig_1..mig_{k-1})), empty max = 0."""
    mig = [float(v[k] - v[k - 1]) for k in range(1, len(v))]
    reward, mark = [], []
    for k, g in enumerate(mig):
        bar = max(mig[:k]) if k > 0 else 0.0
        reward.append(max(0.0, g - bar))
        mark.append(max(mig[: k + 1]))
    return np.array(reward, dtype=np.float64), np.array(mark, dtype=np.float64)


# ------------------------------------------------------------------------------------------------------
# aggregate_logprobs
# ------------------------------------------------------------------------------------------------------


def test_aggregate_hand_values() -> None:
    lp = np.array([[-0.5, -1.5], [-0.1, -0.3], [-2.0, 0.0]])
    np.testing.assert_allclose(aggregate_logprobs(lp), [-1.0, -0.2, -1.0])
    np.testing.assert_allclose(aggregate_logprobs(lp, "mean"), [-1.0, -0.2, -1.0])
    np.testing.assert_allclose(aggregate_logprobs(lp, "sum"), [-2.0, -0.4, -2.0])


def test_aggregate_returns_float64_from_float32() -> None:
    lp = np.array([[-1.0, -2.0]], dtype=np.float32)
    out = aggregate_logprobs(lp)
    assert out.dtype == np.float64
    assert out.shape == (1,)
    assert out[0] == -1.5


@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 12), st.integers(1, 16)),
        elements=st.floats(min_value=-50.0, max_value=0.0, allow_nan=False),
    )
)
def test_mean_equals_sum_over_n(lp: np.ndarray) -> None:
    mean = aggregate_logprobs(lp, "mean")
    total = aggregate_logprobs(lp, "sum")
    assert mean.shape == total.shape == (lp.shape[0],)
    np.testing.assert_allclose(mean, total / lp.shape[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("lp", "aggregation"),
    [
        (np.zeros((3, 0)), "mean"),  # n_answer_tokens == 0
        (np.zeros((3, 0)), "sum"),
        (np.zeros((0, 2)), "mean"),  # no v_0 row
        (np.zeros(3), "mean"),  # 1-D
        (np.zeros((2, 2, 2)), "mean"),  # 3-D
        (np.zeros((2, 2)), "max"),  # unknown aggregation
    ],
)
def test_aggregate_rejects_bad_input(lp: np.ndarray, aggregation: str) -> None:
    with pytest.raises(ValueError):
        aggregate_logprobs(lp, aggregation)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------
# Hand-computed step rewards
# ------------------------------------------------------------------------------------------------------

HAND_V = [-2.0, -1.0, -1.5, -0.5, -0.5]


def test_marginal_gains_and_level_watermark_hand() -> None:
    # mig = (-1 - -2, -1.5 - -1, -0.5 - -1.5, -0.5 - -0.5) = (1.0, -0.5, 1.0, 0.0)
    np.testing.assert_array_equal(marginal_gains(HAND_V), [1.0, -0.5, 1.0, 0.0])
    # W = running max = (-2, -1, -1, -0.5, -0.5)
    np.testing.assert_array_equal(level_watermark(HAND_V), [-2.0, -1.0, -1.0, -0.5, -0.5])


def test_level_hand() -> None:
    # W_0 = -2
    # k=1: r = max(0, -1.0 - -2.0) = 1.0, W_1 = -1.0
    # k=2: r = max(0, -1.5 - -1.0) = 0.0, W_2 = -1.0
    # k=3: r = max(0, -0.5 - -1.0) = 0.5, W_3 = -0.5
    # k=4: r = max(0, -0.5 - -0.5) = 0.0, W_4 = -0.5   (tie is not a new strict maximum)
    sr = step_rewards(HAND_V)
    np.testing.assert_array_equal(sr.mig, [1.0, -0.5, 1.0, 0.0])
    np.testing.assert_array_equal(sr.watermark, [-1.0, -1.0, -0.5, -0.5])
    np.testing.assert_array_equal(sr.reward, [1.0, 0.0, 0.5, 0.0])
    assert sr.process_reward == 1.5  # == max(v) - v_0 = -0.5 - -2.0
    assert sr.max_reward == 1.0
    assert sr.num_steps == 4


def test_gain_hand() -> None:
    # mig = (1.0, -0.5, 1.0, 0.0)
    # k=1: bar = max() = 0 (empty)        -> r = max(0, 1.0 - 0.0)  = 1.0, watermark max(1.0)        = 1.0
    # k=2: bar = max(1.0) = 1.0           -> r = max(0, -0.5 - 1.0) = 0.0, watermark max(1, -0.5)    = 1.0
    # k=3: bar = max(1.0, -0.5) = 1.0     -> r = max(0, 1.0 - 1.0)  = 0.0, watermark max(1, -.5, 1)  = 1.0
    # k=4: bar = max(1.0, -0.5, 1.0) = 1  -> r = max(0, 0.0 - 1.0)  = 0.0, watermark                 = 1.0
    sr = step_rewards(HAND_V, watermark="gain")
    np.testing.assert_array_equal(sr.mig, [1.0, -0.5, 1.0, 0.0])
    np.testing.assert_array_equal(sr.watermark, [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(sr.reward, [1.0, 0.0, 0.0, 0.0])
    assert sr.process_reward == 1.0
    assert sr.max_reward == 1.0


def test_gain_hand_rising_gains() -> None:
    # v = (0, 0.5, 1.5, 1.0, 3.0): mig = (0.5, 1.0, -0.5, 2.0)
    # k=1: bar 0            -> r = 0.5;  k=2: bar 0.5 -> r = 0.5
    # k=3: bar 1.0          -> r = 0.0;  k=4: bar 1.0 -> r = 1.0        sum = 2.0
    # watermark = (0.5, 1.0, 1.0, 2.0)
    sr = step_rewards([0.0, 0.5, 1.5, 1.0, 3.0], watermark="gain")
    np.testing.assert_array_equal(sr.reward, [0.5, 0.5, 0.0, 1.0])
    np.testing.assert_array_equal(sr.watermark, [0.5, 1.0, 1.0, 2.0])
    assert sr.process_reward == 2.0
    # level on the same v: W = (0, 0.5, 1.5, 1.5, 3.0) -> r = (0.5, 1.0, 0.0, 1.5), sum = 3.0 = max(v) - v_0
    lv = step_rewards([0.0, 0.5, 1.5, 1.0, 3.0])
    np.testing.assert_array_equal(lv.reward, [0.5, 1.0, 0.0, 1.5])
    assert lv.process_reward == 3.0


def test_gain_literal_formula_with_negative_bar() -> None:
    # Pins the literal formula: for k >= 2 the bar is the raw max of earlier gains (may be negative).
    # v = (0, -2, -3, -3.5): mig = (-2, -1, -0.5)
    # k=1: bar 0                 -> r = max(0, -2 - 0)    = 0
    # k=2: bar max(-2) = -2      -> r = max(0, -1 - -2)   = 1
    # k=3: bar max(-2, -1) = -1  -> r = max(0, -0.5 - -1) = 0.5
    sr = step_rewards([0.0, -2.0, -3.0, -3.5], watermark="gain")
    np.testing.assert_array_equal(sr.reward, [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(sr.watermark, [-2.0, -1.0, -0.5])
    # The level watermark gives nothing: v never exceeds v_0.
    assert step_rewards([0.0, -2.0, -3.0, -3.5]).process_reward == 0.0


@pytest.mark.parametrize("kind", ["level", "gain"])
def test_k_zero(kind: str) -> None:
    sr = step_rewards([-1.25], watermark=kind)  # type: ignore[arg-type]
    for arr in (sr.mig, sr.watermark, sr.reward):
        assert arr.shape == (0,)
        assert arr.dtype == np.float64
    assert sr.process_reward == 0.0
    assert sr.max_reward == 0.0
    assert sr.num_steps == 0
    assert marginal_gains([-1.25]).shape == (0,)
    np.testing.assert_array_equal(level_watermark([-1.25]), [-1.25])


def test_step_rewards_from_aggregated_logprobs() -> None:
    # Per-prefix answer-token log-probs (2 answer tokens), mean-aggregated.
    lp = np.array([[-3.0, -1.0], [-1.0, -1.0], [-2.0, -1.0], [-0.5, -0.5]])
    v = aggregate_logprobs(lp)  # (-2.0, -1.0, -1.5, -0.5)
    np.testing.assert_array_equal(v, [-2.0, -1.0, -1.5, -0.5])
    np.testing.assert_array_equal(step_rewards(v).reward, [1.0, 0.0, 0.5])


def test_step_rewards_is_immutable_and_pure() -> None:
    v = np.array(HAND_V)
    sr = step_rewards(v)
    np.testing.assert_array_equal(v, HAND_V)  # input untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        sr.reward = np.zeros(4)  # type: ignore[misc]
    with pytest.raises(ValueError):
        sr.reward[0] = 5.0
    with pytest.raises(ValueError):
        StepRewards(mig=np.zeros(2), watermark=np.zeros(3), reward=np.zeros(2))


# ------------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------------


@given(any_values, st.sampled_from(["level", "gain"]))
def test_rewards_non_negative_and_shapes(v: np.ndarray, kind: str) -> None:
    sr = step_rewards(v, watermark=kind)  # type: ignore[arg-type]
    k = len(v) - 1
    assert sr.mig.shape == sr.watermark.shape == sr.reward.shape == (k,)
    assert np.all(sr.reward >= 0.0)
    np.testing.assert_array_equal(sr.mig, np.diff(v))
    assert sr.max_reward >= 0.0
    assert sr.process_reward >= sr.max_reward - 1e-12


@given(any_values)
def test_level_sum_telescopes(v: np.ndarray) -> None:
    sr = step_rewards(v)
    assert abs(sr.process_reward - (float(np.max(v)) - float(v[0]))) <= 1e-9
    assert abs(sr.process_reward - (float(level_watermark(v)[-1]) - float(v[0]))) <= 1e-9


@given(any_values)
def test_level_watermark_monotone_and_matches(v: np.ndarray) -> None:
    w = level_watermark(v)
    assert w.shape == v.shape
    assert w[0] == v[0]
    assert np.all(np.diff(w) >= 0.0)
    assert np.all(w >= v)
    np.testing.assert_array_equal(step_rewards(v).watermark, w[1:])


@given(any_values)
def test_level_reward_only_on_new_strict_maximum(v: np.ndarray) -> None:
    r = step_rewards(v).reward
    for k in range(1, len(v)):
        new_max = v[k] > np.max(v[:k])
        assert (r[k - 1] > 0.0) == new_max
        if new_max:
            assert r[k - 1] == v[k] - np.max(v[:k])


@given(any_values)
def test_gain_matches_loop_reference(v: np.ndarray) -> None:
    sr = step_rewards(v, watermark="gain")
    ref_reward, ref_mark = gain_reference(v)
    np.testing.assert_allclose(sr.reward, ref_reward, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sr.watermark, ref_mark, rtol=0, atol=1e-12)


@given(any_values, st.floats(min_value=-50.0, max_value=50.0, allow_nan=False))
def test_shift_invariance(v: np.ndarray, c: float) -> None:
    # Adding a constant to every v_k leaves mig, and hence both reward variants, unchanged (up to rounding).
    for kind in ("level", "gain"):
        a = step_rewards(v, watermark=kind).reward  # type: ignore[arg-type]
        b = step_rewards(v + c, watermark=kind).reward  # type: ignore[arg-type]
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        [],
        np.zeros((0,)),
        [[0.0, 1.0]],
        np.zeros((2, 2)),
        [0.0, float("nan")],
        [float("inf"), 0.0],
        [0.0, -float("inf")],
    ],
)
@pytest.mark.parametrize("fn", [step_rewards, marginal_gains, level_watermark])
def test_bad_v_raises_naming_v(fn, bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"\bv\b"):
        fn(bad)


def test_unknown_watermark_raises() -> None:
    with pytest.raises(ValueError, match="watermark"):
        step_rewards([0.0, 1.0], watermark="peak")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------
# Outcome reward
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("18", "18", 1),
        ("18.0", "18", 1),
        ("18", "18.0", 1),
        ("$18", "18", 1),
        ("\\$18", "18", 1),
        ("\\boxed{18}", "18", 1),
        ("$\\boxed{18}$", "18", 1),
        ("18", "\\boxed{18}", 1),
        ("1,000", "1000", 1),
        ("1000", "1,000", 1),
        ("\\frac{1}{2}", "0.5", 1),
        ("0.5", "\\frac{1}{2}", 1),
        ("\\dfrac{1}{2}", "0.5", 1),
        ("1/2", "\\frac{1}{2}", 1),
        ("\\boxed{\\frac12}", "0.5", 1),
        ("10^{3}", "1000", 1),
        ("-3", "-3", 1),
        ("2\\sqrt{2}", "\\sqrt{8}", 1),
        ("18", "19", 0),
        ("19", "18", 0),
        ("\\boxed{19}", "18", 0),
        ("0.49", "\\frac{1}{2}", 0),
        ("2\\pi", "2", 0),
        (None, "18", 0),
        ("", "18", 0),
        ("   ", "18", 0),
        ("18", "", 0),
    ],
)
def test_outcome_reward(pred: str | None, gold: str, expected: int) -> None:
    out = outcome_reward(pred, gold)
    assert out == expected
    assert type(out) is int


def test_outcome_reward_in_worker_threads() -> None:
    # math-verify's signal-based timeout raises ValueError off the main thread unless disabled.
    cases = [("18", "18.0", 1), ("1,000", "1000", 1), ("\\frac{1}{2}", "0.5", 1), ("18", "19", 0)]

    def run(case: tuple[str, str, int]) -> tuple[int, int, bool]:
        pred, gold, expected = case
        is_main = threading.current_thread() is threading.main_thread()
        return outcome_reward(pred, gold), expected, is_main

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, cases))
    for got, expected, is_main in results:
        assert not is_main
        assert got == expected


def test_outcome_reward_main_thread_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a timeout this comparison does not finish (sympy evaluates a gigantic power tower);
    # in the main thread the signal-based timeout cuts it off and it counts as a wrong answer.
    assert threading.current_thread() is threading.main_thread()
    monkeypatch.setattr(rewards, "MATH_VERIFY_TIMEOUT_S", 1)
    start = time.monotonic()
    assert outcome_reward("10^{10^{10^{10}}}", "1") == 0
    assert time.monotonic() - start < 30.0


# ------------------------------------------------------------------------------------------------------
# SFT gate
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "process_reward", "threshold", "expected"),
    [
        (1, 0.5, 0.0, True),
        (1, 0.0, 0.0, False),  # strict: equal to threshold fails
        (1, -0.1, 0.0, False),
        (0, 0.5, 0.0, False),
        (0, 0.0, 0.0, False),
        (1, 0.3, 0.25, True),
        (1, 0.25, 0.25, False),
        (1, 0.2, 0.25, False),
        (0, 10.0, 0.25, False),
        (1, float("nan"), 0.0, False),
        (True, 1.0, 0.0, True),
    ],
)
def test_sft_gate_truth_table(outcome: int, process_reward: float, threshold: float, expected: bool) -> None:
    got = sft_gate(outcome, process_reward, threshold)
    assert got is expected


def test_sft_gate_default_threshold_with_step_rewards() -> None:
    assert sft_gate(1, step_rewards(HAND_V).process_reward) is True
    assert sft_gate(1, step_rewards([0.0, -1.0, -0.5]).process_reward) is False  # never beats v_0


@pytest.mark.parametrize("outcome", [2, -1, 0.5])
def test_sft_gate_rejects_bad_outcome(outcome: float) -> None:
    with pytest.raises(ValueError, match="outcome"):
        sft_gate(outcome, 1.0)  # type: ignore[arg-type]


@settings(max_examples=50)
@given(st.sampled_from([0, 1]), finite, finite)
def test_sft_gate_property(outcome: int, process_reward: float, threshold: float) -> None:
    assert sft_gate(outcome, process_reward, threshold) == (outcome == 1 and process_reward > threshold)
