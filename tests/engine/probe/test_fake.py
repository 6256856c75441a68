"""The package's fake probe: deterministic, prefix-dependent, limited and failing on demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mig_annotator.engine.annotator import Annotator, TraceError
from mig_annotator.engine.probe import ContextLimitError, ProbeError, open_probe
from mig_annotator.engine.probe.base import CALL_WINDOW
from mig_annotator.engine.probe.fake import ByteTokenizer, FakeProbe
from mig_annotator.engine.prompt import PromptBuilder
from mig_annotator.schemas import PromptTemplate, ScoringConfig, Trace

SMOLLM2_TOKENIZER = Path(__file__).resolve().parents[3] / "bench" / "assets" / "smollm2-tokenizer"


def _trace(trace_id: str, steps: list[str], answer: str = "7") -> Trace:
    return Trace(
        id=trace_id, question="Sam has 3 apples and buys 4. How many?", steps=steps, reference_answer=answer
    )


def _sequences(probe: FakeProbe, traces: list[Trace]):
    builder = PromptBuilder(probe.tokenizer, ScoringConfig().prompt)
    return [builder.build(t.question, t.steps or [], t.reference_answer) for t in traces]


def test_open_probe_gives_the_fake_for_backend_fake() -> None:
    probe = open_probe({"backend": "fake", "seed": 3, "context_limit": 512})
    assert isinstance(probe, FakeProbe)
    assert (probe.model_id, probe.context_limit, probe.settings.seed) == ("fake-probe", 512, 3)


def test_the_byte_tokenizer_round_trips_text_and_renders_a_chat_prompt() -> None:
    tokenizer = ByteTokenizer()
    ids = tokenizer(["Zoë 42"], add_special_tokens=True)["input_ids"][0]
    assert len(ids) == len("Zoë 42".encode()) and tokenizer.decode(ids) == "Zoë 42"
    header = PromptBuilder(tokenizer, PromptTemplate(chat=True)).header_text("2+2?")
    assert header == "<|user|>\n2+2?\n<|assistant|>\n"


def test_a_step_that_states_the_answer_earns_a_reward() -> None:
    trace = _trace("t", ["He starts with 3 apples.", "He buys 4, so 3 + 4 = 7."])
    (annotation,) = Annotator(FakeProbe()).annotate([trace])
    assert annotation.v0 < 0 and all(step.v < 0 for step in annotation.steps)
    assert annotation.steps[1].v > annotation.steps[0].v + 0.5  # "7" now occurs in the prefix
    assert annotation.steps[1].reward > 0.5 and annotation.process_reward > 0.5
    assert annotation.probe_model == "fake-probe"
    assert annotation.probe_identity == FakeProbe().identity().fingerprint


def test_scores_are_deterministic_and_do_not_depend_on_the_batch() -> None:
    traces = [_trace(f"t{i}", [f"Step {i}: add {i}.", "Then 3 + 4 = 7."]) for i in range(4)]
    probe = FakeProbe()
    batched = [r.token_logprobs for r in probe.score(_sequences(probe, traces))]
    alone = [FakeProbe().score(_sequences(probe, [t]))[0].token_logprobs for t in traces]
    for a, b in zip(batched, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(batched[0], batched[1])  # different prefixes, different numbers
    assert all(np.all(values < 0) for values in batched)


def test_the_seed_changes_the_numbers_and_the_identity() -> None:
    sequence = _sequences(FakeProbe(), [_trace("t", ["3 + 4 = 7."])])
    first, second = FakeProbe(seed=1), FakeProbe(seed=2)
    assert not np.array_equal(
        first.score(sequence)[0].token_logprobs, second.score(sequence)[0].token_logprobs
    )
    assert first.identity() != second.identity()
    assert first.identity() == FakeProbe(seed=1, fail_marker="x", delay_s=0.0).identity()


def test_the_context_limit_is_enforced_and_named() -> None:
    probe = FakeProbe(context_limit=64)
    long_trace = _trace("long", ["He starts with 3 apples and counts them again and again."])
    with pytest.raises(ContextLimitError, match=r"sequence 0: \d+ tokens exceed the context limit 64"):
        probe.score(_sequences(probe, [long_trace]))
    with pytest.raises(TraceError, match=r"'long'.*context limit of 64"):
        Annotator(probe).annotate([long_trace])
    assert probe.stats.score_calls == 0


def test_a_marker_in_a_trace_fails_its_batch_and_fail_next_fails_the_next_calls() -> None:
    probe = FakeProbe(fail_marker="BOOM")
    good, bad = _trace("good", ["3 + 4 = 7."]), _trace("bad", ["BOOM 3 + 4 = 7."])
    with pytest.raises(ProbeError, match=r"injected failure: sequence 1 contains the marker 'BOOM'"):
        probe.score(_sequences(probe, [good, bad]))
    assert len(probe.score(_sequences(probe, [good]))) == 1
    probe.fail_next(2)
    for _ in range(2):
        with pytest.raises(ProbeError, match="injected failure: device lost"):
            probe.score(_sequences(probe, [good]))
    assert len(probe.score(_sequences(probe, [good]))) == 1


def test_stats_count_every_call_but_keep_a_bounded_window_of_durations() -> None:
    probe = FakeProbe()
    sequences = _sequences(probe, [_trace("t", ["3 + 4 = 7."])])
    for _ in range(CALL_WINDOW + 10):
        probe.score(sequences)
    stats = probe.stats
    assert stats.score_calls == stats.traces == stats.forward_calls == CALL_WINDOW + 10
    assert len(stats.per_call_seconds) == CALL_WINDOW
    assert stats.tokens_forwarded == (CALL_WINDOW + 10) * sequences[0].minimal_tokens


def test_with_a_hugging_face_tokenizer_folder_it_tokenises_like_it() -> None:
    from transformers import AutoTokenizer

    probe = FakeProbe(tokenizer=str(SMOLLM2_TOKENIZER))
    reference = AutoTokenizer.from_pretrained(SMOLLM2_TOKENIZER)
    (sequence,) = _sequences(probe, [_trace("t", ["3 + 4 = 7."])])
    header = PromptBuilder(reference, ScoringConfig().prompt).header_text(_trace("t", ["x"]).question)
    assert (
        list(sequence.trace_ids[: sequence.boundaries[0]])
        == reference([header], add_special_tokens=False)["input_ids"][0]
    )
    assert probe.identity() != FakeProbe().identity()
    (annotation,) = Annotator(probe).annotate([_trace("t", ["He has 3.", "3 + 4 = 7."])])
    assert annotation.steps[1].reward > 0
