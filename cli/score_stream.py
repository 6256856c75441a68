"""The streaming loop of `score`: rows in, annotations out batch by batch, bad rows reported and skipped.

Invariants: results are written in input order, each batch as soon as it is annotated; a bad row (one that
is not a trace, or that the engine refuses) is reported once and never written; with ``strict`` the loop
stops at the first bad row, after writing every good row before it and none after it. A probe failure is
not a row's fault: it propagates (the rows of earlier batches are already written).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mig_annotator.builder.rows import RowProblem
from mig_annotator.cli.trace_input import InputRow
from mig_annotator.engine.annotator import TraceError
from mig_annotator.schemas import Trace, TraceAnnotation

AnnotateMany = Callable[[Sequence[Trace]], Sequence[TraceAnnotation | TraceError]]


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row left out: where it is, the field at fault (None: the row as a whole) and why."""

    where: str
    field: str | None
    problem: str

    def __str__(self) -> str:
        return (
            f"{self.where}: {self.field}: {self.problem}" if self.field else f"{self.where}: {self.problem}"
        )


@dataclass
class Tally:
    scored: int = 0
    failed: int = 0
    stopped: bool = False  # strict mode met a bad row


class ScoreSink(Protocol):
    """Where the stream's results go; `score` implements it over its output and stderr."""

    def annotated(self, annotations: Sequence[TraceAnnotation]) -> None:
        """One finished batch's annotations, in input order."""

    def bad_row(self, row: BadRow) -> None:
        """A row left out."""

    def progress(self, end_byte: int, tally: Tally) -> None:
        """The input has been handled up to ``end_byte``."""


def score_stream(
    rows: Iterable[InputRow], annotate_many: AnnotateMany, sink: ScoreSink, *, batch_size: int, strict: bool
) -> Tally:
    """Annotate ``rows`` in batches of ``batch_size`` traces; see the module's invariants."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    tally = Tally()
    pending: list[InputRow] = []

    def flush() -> bool:
        """Annotate and hand on the pending rows; False when strict mode must stop."""
        if not pending:
            return True
        traces = [row.item for row in pending]
        results = annotate_many(traces)  # type: ignore[arg-type]
        written: list[TraceAnnotation] = []
        go_on = True
        for row, result in zip(pending, results, strict=True):
            if isinstance(result, TraceError):
                tally.failed += 1
                sink.bad_row(_trace_error(row.where, result))
                if strict:
                    go_on = False
                    break
            else:
                written.append(result)
        tally.scored += len(written)
        if written:
            sink.annotated(written)
        sink.progress(pending[-1].end_byte, tally)
        pending.clear()
        return go_on

    for row in rows:
        if isinstance(row.item, RowProblem):
            if strict and not flush():
                break
            tally.failed += 1
            sink.bad_row(BadRow(row.where, row.item.field, _without_field(row.item)))
            sink.progress(row.end_byte, tally)
            if strict:
                break
            continue
        pending.append(row)
        if len(pending) >= batch_size and not flush():
            break
    else:
        flush()
    tally.stopped = strict and tally.failed > 0
    return tally


def _trace_error(where: str, error: TraceError) -> BadRow:
    return BadRow(where, error.field, f"{error.problem} (trace {error.trace_id!r})")


def _without_field(problem: RowProblem) -> str:
    """The problem's text without a leading ``field:`` (validation problems start with their field)."""
    prefix = f"{problem.field}: "
    return problem.reason.removeprefix(prefix) if problem.field else problem.reason
