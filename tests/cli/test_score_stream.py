"""The streaming loop of `score`, with a stand-in for ``Annotator.annotate_many`` (no probe)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mig_annotator.builder.rows import RowProblem
from mig_annotator.cli.score_stream import BadRow, Tally, score_stream
from mig_annotator.cli.trace_input import InputRow
from mig_annotator.engine.annotator import TraceError
from mig_annotator.schemas import Trace, TraceAnnotation


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def annotated(self, annotations: Sequence[TraceAnnotation]) -> None:
        self.events.append(("batch", [annotation.trace_id for annotation in annotations]))

    def bad_row(self, row: BadRow) -> None:
        self.events.append(("bad", str(row)))

    def progress(self, end_byte: int, tally: Tally) -> None:
        self.events.append(("progress", (end_byte, tally.scored, tally.failed)))

    def of(self, kind: str) -> list[object]:
        return [payload for event, payload in self.events if event == kind]


class FakeAnnotator:
    """Annotates every trace except those whose id starts with 'refused' (a TraceError on 'completion')."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def annotate_many(self, traces: Sequence[Trace]) -> list[TraceAnnotation | TraceError]:
        self.calls.append([trace.id for trace in traces])
        return [
            TraceError(trace.id, "completion", "over the probe's context limit")
            if trace.id.startswith("refused")
            else TraceAnnotation.model_construct(trace_id=trace.id)
            for trace in traces
        ]


def trace_row(line: int, trace_id: str) -> InputRow:
    trace = Trace(id=trace_id, question="q?", completion="a\nb", reference_answer="1")
    return InputRow(f"in.jsonl:{line}", trace, end_byte=10 * line)


def problem_row(line: int) -> InputRow:
    problem = RowProblem("validation", "reference_answer", "reference_answer: must not be empty")
    return InputRow(f"in.jsonl:{line}", problem, end_byte=10 * line)


def test_good_rows_are_written_batch_by_batch_in_input_order() -> None:
    rows = [trace_row(line, f"t{line}") for line in range(1, 6)]
    sink, annotator = RecordingSink(), FakeAnnotator()
    tally = score_stream(rows, annotator.annotate_many, sink, batch_size=2, strict=False)
    assert annotator.calls == [["t1", "t2"], ["t3", "t4"], ["t5"]]
    assert sink.of("batch") == [["t1", "t2"], ["t3", "t4"], ["t5"]]
    assert sink.of("progress") == [(20, 2, 0), (40, 4, 0), (50, 5, 0)]
    assert (tally.scored, tally.failed, tally.stopped) == (5, 0, False)


def test_bad_rows_are_reported_with_place_and_field_and_skipped() -> None:
    rows = [trace_row(1, "t1"), problem_row(2), trace_row(3, "refused-3"), trace_row(4, "t4")]
    sink = RecordingSink()
    tally = score_stream(rows, FakeAnnotator().annotate_many, sink, batch_size=10, strict=False)
    assert sink.of("batch") == [["t1", "t4"]]
    assert sink.of("bad") == [
        "in.jsonl:2: reference_answer: must not be empty",
        "in.jsonl:3: completion: over the probe's context limit (trace 'refused-3')",
    ]
    assert (tally.scored, tally.failed, tally.stopped) == (2, 2, False)


def test_strict_stops_at_an_unreadable_row_after_writing_the_rows_before_it() -> None:
    rows = [trace_row(1, "t1"), trace_row(2, "t2"), problem_row(3), trace_row(4, "t4")]
    sink, annotator = RecordingSink(), FakeAnnotator()
    tally = score_stream(rows, annotator.annotate_many, sink, batch_size=10, strict=True)
    assert annotator.calls == [["t1", "t2"]]  # the pending rows are scored before stopping; t4 never is
    assert sink.of("batch") == [["t1", "t2"]]
    assert sink.of("bad") == ["in.jsonl:3: reference_answer: must not be empty"]
    assert (tally.scored, tally.failed, tally.stopped) == (2, 1, True)


def test_strict_stops_at_a_refused_trace_and_drops_the_rest_of_its_batch() -> None:
    rows = [trace_row(1, "t1"), trace_row(2, "refused-2"), trace_row(3, "t3"), trace_row(4, "t4")]
    sink, annotator = RecordingSink(), FakeAnnotator()
    tally = score_stream(rows, annotator.annotate_many, sink, batch_size=3, strict=True)
    assert annotator.calls == [["t1", "refused-2", "t3"]]
    assert sink.of("batch") == [["t1"]]
    assert sink.of("bad") == ["in.jsonl:2: completion: over the probe's context limit (trace 'refused-2')"]
    assert (tally.scored, tally.failed, tally.stopped) == (1, 1, True)


def test_a_problem_without_a_field_names_only_the_place() -> None:
    row = InputRow("in.jsonl:7", RowProblem("mapping", None, "not valid JSON (Expecting value)"), 70)
    sink = RecordingSink()
    score_stream([row], FakeAnnotator().annotate_many, sink, batch_size=1, strict=False)
    assert sink.of("bad") == ["in.jsonl:7: not valid JSON (Expecting value)"]


def test_a_probe_failure_propagates_after_earlier_batches_are_written() -> None:
    class BrokenProbe(RuntimeError):
        pass

    calls = 0

    def annotate_many(traces: Sequence[Trace]) -> list[TraceAnnotation | TraceError]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise BrokenProbe("server gone")
        return [TraceAnnotation.model_construct(trace_id=trace.id) for trace in traces]

    sink = RecordingSink()
    with pytest.raises(BrokenProbe):
        score_stream(
            [trace_row(n, f"t{n}") for n in (1, 2, 3)], annotate_many, sink, batch_size=2, strict=False
        )
    assert sink.of("batch") == [["t1", "t2"]]


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        score_stream([], FakeAnnotator().annotate_many, RecordingSink(), batch_size=0, strict=False)
