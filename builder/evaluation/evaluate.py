"""`mig-annotator eval`: how well the rewards of a built dataset (or the service's audit log) match labels.

Trace level: AUROC of v_K, v_K - v_0, sum r_k and max r_k against a correctness column. Step level, when
the rows carry a ProcessBench ``label`` (earliest wrong step, 0-based; -1 = all right) and the step
records (built datasets; audit logs hold r_k only): the step AUROC of mig_k and of v_k - W_{k-1} (W the
level watermark, max(v_0..v_{k-1})), and ProcessBench's F1 at tau = 0, at the tau chosen on the data
and at tau chosen by 2-fold cross-validation. Step k (1-based) is ProcessBench step k - 1.

Every score is shown beside the free baseline: the trace's ``outcome`` (the answer check, 0/1), which costs
no probe call. At trace level that is the outcome's AUROC on the same rows; at step level every step of a
trace scores ``outcome - 1`` (0 on a trace whose answer is right, -1 on one whose answer is wrong), so the
outcome alone predicts "no error" for a right answer and "the first step" for a wrong one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mig_annotator.builder.audit.database import (
    AuditDatabase,
    AuditQueryError,
    discover_sources,
    quote_identifier,
)
from mig_annotator.builder.evaluation.processbench import (
    F1Result,
    LabelledSteps,
    StepAuroc,
    f1_at,
    f1_best,
    f1_cross_validated,
    step_auroc,
)
from mig_annotator.builder.evaluation.ranking import auroc
from mig_annotator.builder.evaluation.screening import label_sql as checked_label_sql
from mig_annotator.builder.evaluation.screening import leave_out_non_finite_scores

#: Trace-level scores: (column of the ``annotations`` view, shown name).
TRACE_SCORES = (
    ("v_final", "v_K"),
    ("v_gain", "v_K - v_0"),
    ("process_reward", "sum r_k"),
    ("max_reward", "max r_k"),
)
#: Step scores: shown name -> how it is computed from v_0..v_K.
STEP_SCORES = ("mig_k", "v_k - W_{k-1}")
#: The free baseline every score is shown beside: the trace's answer check.
OUTCOME_COLUMN = "outcome"
TRACE_LABEL_FALLBACKS = ("is_correct", "final_answer_correct", "correct")
INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER")


@dataclass(frozen=True)
class EvalOptions:
    label_col: str | None = None
    step_label_col: str | None = None
    seed: int = 0
    drop_bad_labels: bool = False


@dataclass(frozen=True)
class TraceAuroc:
    score: str
    n: int
    positives: int
    negatives: int
    auroc: float | None
    outcome_auroc: float | None = None  # the outcome's AUROC on the same rows (the free baseline)


@dataclass(frozen=True)
class StepScoreResult:
    score: str
    auroc: StepAuroc
    f1: list[F1Result]


@dataclass
class EvalResult:
    sources: list[str]
    traces: int
    trace_label: str | None
    trace_level: list[TraceAuroc] = field(default_factory=list)
    step_label: str | None = None
    step_traces: int = 0
    step_level: list[StepScoreResult] = field(default_factory=list)
    #: The outcome broadcast to every step (``outcome - 1``), scored as the step scores are.
    step_outcome: StepScoreResult | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "sources": self.sources,
            "traces": self.traces,
            "trace_label": self.trace_label,
            "trace_level": [vars(row) for row in self.trace_level],
            "step_label": self.step_label,
            "step_traces": self.step_traces,
            "step_level": [_step_json(row) for row in self.step_level],
            "step_outcome": _step_json(self.step_outcome) if self.step_outcome else None,
            "notes": self.notes,
        }


def _step_json(row: StepScoreResult) -> dict[str, object]:
    return {
        "score": row.score,
        "auroc": row.auroc.auroc,
        "correct_steps": row.auroc.positives,
        "first_wrong_steps": row.auroc.negatives,
        "f1": [
            {
                "method": f.method,
                "tau": f.tau,
                "fold_taus": list(f.fold_taus),
                "accuracy_erroneous": f.accuracy_erroneous,
                "accuracy_correct": f.accuracy_correct,
                "f1": f.f1,
                "erroneous": f.erroneous,
                "correct": f.correct,
            }
            for f in row.f1
        ],
    }


def _column_types(db: AuditDatabase) -> dict[str, str]:
    return {row[0]: str(row[1]) for row in db.query("DESCRIBE annotations").rows}


def resolve_trace_label(
    db: AuditDatabase,
    label_col: str | None,
    step_label: str | None = None,
    *,
    drop_bad_labels: bool = False,
) -> tuple[str | None, str, list[str]]:
    """The correctness label's name (None when there is none), a SQL boolean expression for it, and notes.

    Without ``label_col``: the first of :data:`TRACE_LABEL_FALLBACKS` present, else "all steps right"
    (``step_label = -1``) when a ProcessBench step label is known. A label column holds booleans or 0/1;
    other values are refused, or left out with ``drop_bad_labels`` (:func:`screening.label_sql`).
    """
    if label_col is not None:
        if label_col not in db.columns:
            raise AuditQueryError(
                f"--label-col {label_col}: no such column (columns: {', '.join(db.columns)})"
            )
        return label_col, *checked_label_sql(
            db, label_col, drop_bad_labels=drop_bad_labels, flag="--drop-bad-labels"
        )
    for name in TRACE_LABEL_FALLBACKS:
        if name in db.columns:
            return name, *checked_label_sql(
                db, name, drop_bad_labels=drop_bad_labels, flag="--drop-bad-labels"
            )
    if step_label is not None:
        return f"{step_label} = -1", f"({quote_identifier(step_label)} = -1)", []
    return None, "NULL::BOOLEAN", []


def default_step_label(db: AuditDatabase) -> str | None:
    """``label`` when it is an integer column (the ProcessBench layout), else None."""
    types = _column_types(db)
    return "label" if types.get("label") in INTEGER_TYPES else None


def _step_label(db: AuditDatabase, options: EvalOptions, notes: list[str]) -> str | None:
    types = _column_types(db)
    name = options.step_label_col
    if name is not None:
        if name not in types:
            raise AuditQueryError(
                f"--step-label-col {name}: no such column (columns: {', '.join(db.columns)})"
            )
        if types[name] not in INTEGER_TYPES:
            raise AuditQueryError(
                f"--step-label-col {name}: must be an integer column (earliest wrong step, -1 = all right), "
                f"got {types[name]}"
            )
        return name
    if default_step_label(db) is not None:
        return "label"
    notes.append(
        "no ProcessBench step label (an integer `label` column; --step-label-col): no step-level results"
    )
    return None


def _margins(v0: float, values: Sequence[float]) -> np.ndarray:
    """v_k - W_{k-1} with the level watermark W_{k-1} = max(v_0..v_{k-1})."""
    v = np.asarray([v0, *values], dtype=np.float64)
    watermark = np.maximum.accumulate(v)[:-1]
    return v[1:] - watermark


def evaluate(paths: Sequence[Path], options: EvalOptions | None = None) -> EvalResult:
    """Evaluate the rewards of the given built datasets and/or audit logs against their labels."""
    options = options or EvalOptions()
    sources = discover_sources(paths)
    with AuditDatabase(sources) as db:
        needed = [column for column, _ in TRACE_SCORES] + [OUTCOME_COLUMN]
        missing = [column for column in needed if column not in db.columns]
        if missing:
            raise AuditQueryError(
                f"the inputs lack the columns {', '.join(missing)}; is this an annotation dataset?"
            )
        notes = leave_out_non_finite_scores(db)
        step_label = _step_label(db, options, notes)
        label_name, label_sql, label_notes = resolve_trace_label(
            db, options.label_col, step_label, drop_bad_labels=options.drop_bad_labels
        )
        notes += label_notes
        has_steps = "steps" in db.columns
        step_sql = "[s.v FOR s IN steps], [s.mig FOR s IN steps]" if has_steps else "NULL, NULL"
        step_label_sql = quote_identifier(step_label) if step_label else "NULL"
        scores_sql = ", ".join(f"{column}::DOUBLE" for column, _ in TRACE_SCORES)
        rows = db.query(
            f"SELECT {label_sql}, {scores_sql}, v0, {step_sql}, {step_label_sql}, outcome::DOUBLE "
            "FROM annotations ORDER BY row_key"
        ).rows
    result = EvalResult([source.name for source in sources], len(rows), label_name, step_label=step_label)
    result.notes = notes
    if not has_steps:
        result.notes.append(
            "the inputs hold no step records (service audit logs keep r_k only, no v_k, mig_k or step "
            "texts): no step-level results"
        )
    if label_name is None:
        result.notes.append(
            f"no correctness column ({', '.join(TRACE_LABEL_FALLBACKS)}; --label-col): no trace-level AUROC"
        )
    else:
        labelled = [row for row in rows if row[0] is not None]
        if len(labelled) < len(rows):
            result.notes.append(
                f"{len(rows) - len(labelled)} rows without a usable {label_name!r} value were left out"
            )
        labels = [bool(row[0]) for row in labelled]
        positives = sum(labels)
        baseline = _outcome_auroc(labelled, labels, result.notes)
        for index, (_, shown) in enumerate(TRACE_SCORES, start=1):
            values = [float(row[index]) for row in labelled]
            area = auroc(labels, values) if labelled else None
            result.trace_level.append(
                TraceAuroc(shown, len(labelled), positives, len(labelled) - positives, area, baseline)
            )
    if step_label is not None and has_steps:
        _step_level(result, rows, options)
    return result


def _outcome_auroc(labelled: list[tuple], labels: list[bool], notes: list[str]) -> float | None:
    """The outcome's AUROC against ``labels`` (None when a row lacks its outcome: no fair comparison)."""
    outcomes = [row[9] for row in labelled]
    if not labelled or any(outcome is None for outcome in outcomes):
        if labelled:
            notes.append("some rows have no outcome: the outcome baseline is not shown")
        return None
    return auroc(labels, [float(outcome) for outcome in outcomes])


def _step_level(result: EvalResult, rows: list[tuple], options: EvalOptions) -> None:
    per_score: dict[str, list[LabelledSteps]] = {name: [] for name in (*STEP_SCORES, OUTCOME_COLUMN)}
    skipped_no_steps = skipped_range = 0
    for row in rows:
        v0, values, migs, label = row[5], row[6], row[7], row[8]
        if values is None or label is None:
            skipped_no_steps += 1
            continue
        label = int(label)
        if label < -1 or label >= len(values):
            skipped_range += 1
            continue
        per_score["mig_k"].append(LabelledSteps(np.asarray(migs, dtype=np.float64), label))
        per_score["v_k - W_{k-1}"].append(LabelledSteps(_margins(v0, values), label))
        outcome = row[9]
        if outcome is not None:
            per_score[OUTCOME_COLUMN].append(LabelledSteps(np.full(len(migs), float(outcome) - 1.0), label))
    if skipped_no_steps:
        result.notes.append(
            f"{skipped_no_steps} rows without step records or a step label were left out of step level"
        )
    if skipped_range:
        result.notes.append(
            f"{skipped_range} rows whose step label is not a scored step (label >= K, e.g. truncated or a "
            "final step holding only the answer) were left out of step level"
        )
    traces = per_score["mig_k"]
    result.step_traces = len(traces)
    for name, labelled in per_score.items():
        f1 = [f1_at(labelled, 0.0), f1_best(labelled), f1_cross_validated(labelled, options.seed)]
        scored = StepScoreResult(name, step_auroc(labelled), f1)
        if name != OUTCOME_COLUMN:
            result.step_level.append(scored)
        elif len(labelled) == len(traces):
            result.step_outcome = scored
