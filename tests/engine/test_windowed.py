"""context_limit="window": every step of a trace over the probe's context scored on left-truncated windows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from mig_annotator.engine.annotator import Annotator, TraceError
from mig_annotator.engine.probe.base import Probe, ProbeResult, ProbeStats
from mig_annotator.engine.prompt import ProbeSequence, Tokenizer
from mig_annotator.engine.windowed import join_results, window_budget, windowed_sequences
from mig_annotator.schemas import ScoringConfig, Trace
from mig_annotator.schemas.probe import ProbeIdentity

WINDOW = ScoringConfig(context_limit="window")
SMALL_LIMIT = 256


class SmallContextProbe:
    """The real probe with a smaller context limit (and a log of every score call's sequences)."""

    def __init__(self, inner: Probe, context_limit: int) -> None:
        self._inner = inner
        self._context_limit = context_limit
        self.calls: list[list[ProbeSequence]] = []

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def context_limit(self) -> int:
        return self._context_limit

    @property
    def tokenizer(self) -> Tokenizer:
        return self._inner.tokenizer

    @property
    def stats(self) -> ProbeStats:
        return self._inner.stats

    def identity(self) -> ProbeIdentity:
        return self._inner.identity()

    def score(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        over = [s.probe_length for s in sequences if s.probe_length > self._context_limit]
        assert not over, f"sequences over the wrapped limit {self._context_limit}: {over}"
        self.calls.append(list(sequences))
        return self._inner.score(sequences)


def long_trace(trace_id: str = "long", steps: int = 12) -> Trace:
    return Trace(
        id=trace_id,
        question="Tom has 3 apples and buys 4 bags of 5 apples each. How many apples does he have?",
        steps=[
            f"Step {k}: we count the apples in bag {k} and add 5 to the running total again."
            for k in range(steps)
        ]
        + ["The answer is 23"],
        reference_answer="23",
    )


# ----------------------------------------------------------------------------------------------------------
# the window construction (no model)
# ----------------------------------------------------------------------------------------------------------


def hand_sequence() -> ProbeSequence:
    # header of 3 tokens (1, 2, 3), steps of 4 tokens each, a continuation of 3 tokens (2 answer tokens)
    trace_ids = tuple(range(1, 4)) + tuple(range(100, 116))
    return ProbeSequence(trace_ids, (3, 7, 11, 15, 19), (900, 901, 902), 2)


def test_prefixes_that_fit_stay_exact_and_each_longer_one_keeps_the_header_and_its_latest_tokens() -> None:
    sequence = hand_sequence()
    limit = 3 + 8 + 3  # header, 8 step tokens, continuation: prefixes 0..2 fit, 3 and 4 do not
    windowed = windowed_sequences(sequence, limit)
    assert windowed.exact == sequence.truncated(2)
    assert window_budget(sequence, limit) == 8
    assert [w.trace_ids for w in windowed.windows] == [
        (1, 2, 3, *range(104, 112)),  # prefix 3 ends at token 111: its 8 latest step tokens
        (1, 2, 3, *range(108, 116)),  # prefix 4 ends at token 115
    ]
    for window in windowed.windows:
        assert window.boundaries == (len(window.trace_ids),)
        assert window.continuation_ids == sequence.continuation_ids and window.n_answer_tokens == 2
        assert window.probe_length == limit


def test_a_trace_that_fits_has_no_windows() -> None:
    sequence = hand_sequence()
    windowed = windowed_sequences(sequence, sequence.probe_length)
    assert windowed.exact == sequence and windowed.windows == ()


def test_no_room_for_a_single_step_token_is_refused() -> None:
    with pytest.raises(ValueError, match="leave no room for step tokens"):
        windowed_sequences(hand_sequence(), 3 + 3)


def test_join_results_stacks_rows_in_prefix_order_and_adds_tokens() -> None:
    exact = ProbeResult(np.array([[0.0, 1.0], [2.0, 3.0]]), 10)
    window = ProbeResult(np.array([[4.0, 5.0]]), 7)
    joined = join_results([exact, window])
    np.testing.assert_array_equal(joined.token_logprobs, [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    assert joined.tokens_forwarded == 17
    assert join_results([exact]) is exact


# ----------------------------------------------------------------------------------------------------------
# the engine on the real SmolLM2 probe, wrapped to a 256-token context
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def small_probe(packed_probe) -> SmallContextProbe:
    return SmallContextProbe(packed_probe, SMALL_LIMIT)


@pytest.mark.model
def test_a_trace_over_the_context_scores_every_step_and_reports_the_windowed_ones(
    small_probe: SmallContextProbe, packed_probe
) -> None:
    trace = long_trace()
    annotator = Annotator(small_probe)
    (plan,) = annotator.plan([trace], WINDOW)
    assert plan.probe_length == SMALL_LIMIT and plan.windows  # type: ignore[union-attr]
    with pytest.raises(TraceError, match="or 'window'"):
        annotator.annotate([trace])  # the default policy still refuses it

    (windowed,) = annotator.annotate([trace], WINDOW)
    (exact,) = Annotator(packed_probe).annotate([trace])  # the full 8192 context: every prefix exact
    assert len(windowed.steps) == windowed.steps_total == len(exact.steps) == 12
    assert not windowed.truncated and exact.windowed_steps == 0
    fitting = len(windowed.steps) - windowed.windowed_steps
    assert 0 < fitting < len(windowed.steps)
    exact_v = [exact.v0, *(step.v for step in exact.steps)]
    window_v = [windowed.v0, *(step.v for step in windowed.steps)]
    # prefixes 0..fitting fit: scored exactly; the rest read a window and differ
    np.testing.assert_allclose(window_v[: fitting + 1], exact_v[: fitting + 1], atol=1e-5, rtol=0)
    assert all(
        abs(w - e) > 1e-6 for w, e in zip(window_v[fitting + 1 :], exact_v[fitting + 1 :], strict=True)
    )
    # the windowed prefixes' v is the probe's score on header + latest tokens + continuation, nothing else
    full = plan.sequence  # type: ignore[union-attr]
    (unwindowed,) = Annotator(packed_probe).plan([trace])
    sequence = unwindowed.sequence  # type: ignore[union-attr]
    budget = window_budget(sequence, SMALL_LIMIT)
    last = sequence.boundaries[-1]
    manual = sequence.trace_ids[: sequence.boundaries[0]] + sequence.trace_ids[last - budget : last]
    (result,) = packed_probe.score(
        [ProbeSequence(manual, (len(manual),), sequence.continuation_ids, sequence.n_answer_tokens)]
    )
    assert window_v[-1] == pytest.approx(float(result.token_logprobs.mean()), abs=1e-5)
    assert full.n_prefixes == fitting + 1
    # the rewards follow from the values as usual
    assert windowed.process_reward == pytest.approx(sum(step.reward for step in windowed.steps))


@pytest.mark.model
def test_windowed_and_plain_traces_go_to_the_probe_in_one_call_and_come_back_in_order(
    small_probe: SmallContextProbe,
) -> None:
    short = Trace(id="short", question="What is 2 + 3?", steps=["2 + 3 = 5."], reference_answer="5")
    traces = [long_trace("a", 10), short, long_trace("b", 12)]
    annotator = Annotator(small_probe)
    results = annotator.annotate_many(traces, WINDOW)
    assert len(small_probe.calls) == 1
    plans = annotator.plan(traces, WINDOW)
    assert len(small_probe.calls[0]) == sum(len(plan.probe_sequences) for plan in plans)  # type: ignore[union-attr]
    assert [result.trace_id for result in results] == ["a", "short", "b"]  # type: ignore[union-attr]
    assert [len(result.steps) for result in results] == [10, 1, 12]  # type: ignore[union-attr]
    assert results[1].windowed_steps == 0 and results[0].windowed_steps > 0  # type: ignore[union-attr]
    alone = Annotator(small_probe).annotate([traces[2]], WINDOW)[0]
    assert [step.v for step in alone.steps] == pytest.approx([step.v for step in results[2].steps], abs=1e-5)  # type: ignore[union-attr]


@pytest.mark.model
def test_a_trace_that_fits_scores_the_same_under_window_and_error(small_probe: SmallContextProbe) -> None:
    trace = long_trace("fits", 2)
    annotator = Annotator(small_probe)
    (plan,) = annotator.plan([trace], WINDOW)
    assert plan.windows == ()  # type: ignore[union-attr]
    (windowed,) = annotator.annotate([trace], WINDOW)
    (plain,) = annotator.annotate([trace])
    assert windowed.windowed_steps == 0
    assert windowed.model_dump(exclude={"config_hash"}) == plain.model_dump(exclude={"config_hash"})
    assert windowed.config_hash != plain.config_hash  # the policy is part of the config


@pytest.mark.model
def test_a_question_too_long_for_any_window_is_an_error_naming_the_trace(packed_probe) -> None:
    trace = Trace(id="q-long", question="How many? " * 200, steps=["one"], reference_answer="1")
    with pytest.raises(TraceError) as caught:
        Annotator(SmallContextProbe(packed_probe, SMALL_LIMIT)).annotate([trace], WINDOW)
    assert caught.value.trace_id == "q-long" and "context limit of 256" in str(caught.value)
