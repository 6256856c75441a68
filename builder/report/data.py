"""What the HTML report shows, aggregated in DuckDB over a built dataset or the service's audit log.

Everything sized by the number of rows (summaries, histograms, group tables) is computed in DuckDB; only
the sampled traces (``sample`` per outcome, chosen by a seeded hash of the trace id, so the same seed shows
the same traces) and the (label, score) pairs of the ROC curves come back to Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mig_annotator.builder.audit.database import AuditDatabase, AuditQueryError, quote_identifier
from mig_annotator.builder.evaluation.evaluate import (
    OUTCOME_COLUMN,
    TRACE_SCORES,
    default_step_label,
    resolve_trace_label,
)
from mig_annotator.builder.evaluation.ranking import RocCurve, roc_curve
from mig_annotator.builder.evaluation.screening import leave_out_non_finite_scores

HISTOGRAM_BINS = 30
POSITION_BINS = 10
MAX_GROUPS = 50
DEFAULT_GROUPS = ("dataset", "source_file", "generator", "source")
#: The ROC curve of the free baseline (the answer check alone), drawn beside the reward scores' curves.
OUTCOME_CURVE = "outcome (baseline)"
#: Columns only built datasets have: an audit log lacks them (it keeps r_k per step and the trace verdicts).
STEP_DETAIL = "step texts, v_k, mig_k, W_k, the completion and the answer span"


@dataclass(frozen=True)
class Histogram:
    """Counts per bin for outcome 1 (correct) and 0 (wrong); bins share ``edges``."""

    edges: list[float]
    correct: list[int]
    wrong: list[int]


@dataclass(frozen=True)
class StepView:
    k: int
    reward: float
    text: str | None = None
    start: int | None = None
    end: int | None = None
    v: float | None = None
    mig: float | None = None
    watermark: float | None = None


@dataclass(frozen=True)
class TraceView:
    """One sampled trace: enough to draw its trajectory and its heatmap."""

    dataset: str
    trace_id: str
    outcome: int
    v0: float
    v_final: float
    process_reward: float
    steps: list[StepView]
    completion: str | None = None
    answer: str | None = None
    reference_answer: str | None = None
    answer_span: tuple[int, int] | None = None
    label: bool | None = None
    thumbnails: tuple[bytes, ...] = ()  # PNGs of the question's images (built datasets)


@dataclass(frozen=True)
class GroupTable:
    column: str
    headers: list[str]
    rows: list[tuple[Any, ...]]
    more: int


@dataclass
class ReportData:
    sources: list[str]
    kinds: list[str]
    summary: dict[str, Any]
    process_reward: Histogram
    v_final: Histogram
    max_position: Histogram
    zero_reward_traces: int
    traces: list[TraceView]
    groups: list[GroupTable]
    label: str | None
    roc: dict[str, RocCurve] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    has_step_detail: bool = True


def _histogram(
    db: AuditDatabase,
    expression: str,
    where: str = "TRUE",
    lo_hi: tuple[float, float] | None = None,
    bins: int = HISTOGRAM_BINS,
) -> Histogram:
    if lo_hi is None:
        lo, hi = db.query(f"SELECT min({expression}), max({expression}) FROM annotations WHERE {where}").rows[
            0
        ]
        if lo is None:
            return Histogram([], [], [])
        lo, hi = float(lo), float(hi)
    else:
        lo, hi = lo_hi
    width = (hi - lo) / bins if hi > lo else 1.0
    counts = db.query(
        f"""
        SELECT outcome, least(greatest(floor(({expression} - ?) / ?), 0), ?)::INTEGER AS bin, count(*)
        FROM annotations WHERE {where} GROUP BY ALL
        """,
        [lo, width, bins - 1],
    ).rows
    correct, wrong = [0] * bins, [0] * bins
    for outcome, index, count in counts:
        (correct if outcome == 1 else wrong)[index] += count
    return Histogram([lo + i * width for i in range(bins + 1)], correct, wrong)


def _summary(db: AuditDatabase) -> dict[str, Any]:
    row = db.query(
        """
        SELECT count(*), avg(outcome), avg(process_reward), avg(sft_gate::INTEGER),
            avg((process_reward = 0)::INTEGER), sum(truncated::INTEGER),
            string_agg(DISTINCT probe_model, ', ' ORDER BY probe_model),
            string_agg(DISTINCT config_hash, ', ' ORDER BY config_hash), avg(n_steps)
        FROM annotations
        """
    ).rows[0]
    names = (
        "rows",
        "outcome_rate",
        "process_reward_mean",
        "sft_rate",
        "zero_reward_rate",
        "truncated",
        "probe_model",
        "config_hash",
        "steps_mean",
    )
    summary = dict(zip(names, row, strict=True))
    views = {r[0] for r in db.query("SELECT view_name FROM duckdb_views()").rows}
    summary["rejects"] = db.query("SELECT count(*) FROM rejects").rows[0][0] if "rejects" in views else None
    return summary


#: Ids and group values longer than this are shown shortened, with a hash (the full value stays in the data).
MAX_SHOWN_CHARS = 80


def shortened_sql(expression: str) -> str:
    """``expression`` (text) cut to :data:`MAX_SHOWN_CHARS`, ending ``…#`` and 12 hex digits of its md5."""
    keep = MAX_SHOWN_CHARS - 14
    return (
        f"(CASE WHEN length({expression}) > {MAX_SHOWN_CHARS} "
        f"THEN left({expression}, {keep}) || '…#' || left(md5({expression}), 12) ELSE {expression} END)"
    )


def _sample_filter(seed: int) -> str:
    """A stable per-trace order: a hash of the trace id and the seed."""
    return f"hash(coalesce(trace_id, row_key) || ':{int(seed)}')"


def _sample(db: AuditDatabase, per_outcome: int, seed: int, label_sql: str) -> list[TraceView]:
    if per_outcome <= 0:
        return []
    detail = "steps" in db.columns
    order = _sample_filter(seed)
    optional = {
        name: quote_identifier(name) if name in db.columns else "NULL"
        for name in ("completion", "answer", "reference_answer")
    }
    span = "answer_span.start, answer_span.end" if "answer_span" in db.columns else "NULL, NULL"
    images = "[i.thumbnail_png FOR i IN question_images]" if "question_images" in db.columns else "NULL"
    steps = (
        "[{'k': s.index, 'reward': s.reward, 'text': s.text, 'start': s.span.start, 'end': s.span.end, "
        "'v': s.v, 'mig': s.mig, 'watermark': s.watermark} FOR s IN steps]"
        if detail
        else "[{'k': i, 'reward': step_rewards[i]} FOR i IN range(1, len(step_rewards) + 1)]"
    )
    # audit-log rows in a mixed input have no `steps`: show them from step_rewards
    if detail and "step_rewards" in db.columns:
        steps = (
            f"CASE WHEN steps IS NOT NULL THEN {steps} ELSE "
            "[{'k': i, 'reward': step_rewards[i], 'text': NULL, 'start': NULL, 'end': NULL, 'v': NULL, "
            "'mig': NULL, 'watermark': NULL} FOR i IN range(1, len(step_rewards) + 1)] END"
        )
    rows = db.query(
        f"""
        SELECT dataset, {shortened_sql("trace_id::VARCHAR")}, outcome, v0, v_final, process_reward, {steps},
            {optional["completion"]},
            {optional["answer"]}, {optional["reference_answer"]}, {span}, {label_sql}, {images}
        FROM annotations
        QUALIFY row_number() OVER (PARTITION BY outcome ORDER BY {order}, row_key) <= ?
        ORDER BY outcome DESC, {order}, row_key
        """,
        [per_outcome],
    ).rows
    traces = []
    for row in rows:
        step_views = [
            StepView(**{k: v for k, v in step.items() if v is not None or k in ("k", "reward")})
            for step in row[6] or []
        ]
        traces.append(
            TraceView(
                dataset=row[0],
                trace_id=str(row[1]),
                outcome=int(row[2]),
                v0=float(row[3]),
                v_final=float(row[4]),
                process_reward=float(row[5]),
                steps=step_views,
                completion=row[7],
                answer=row[8],
                reference_answer=row[9],
                answer_span=(row[10], row[11]) if row[10] is not None else None,
                label=row[12],
                thumbnails=tuple(bytes(image) for image in row[13] or () if image is not None),
            )
        )
    return traces


def _group_table(db: AuditDatabase, column: str, label_sql: str | None) -> GroupTable:
    c = quote_identifier(column)
    extra = f", avg(({label_sql})::INTEGER) AS label_rate" if label_sql else ""
    result = db.query(
        f"""
        SELECT {shortened_sql(f"{c}::VARCHAR")} AS {c}, count(*) AS traces, avg(outcome) AS outcome_rate,
            avg(process_reward) AS process_reward_mean, median(process_reward) AS process_reward_p50,
            avg(sft_gate::INTEGER) AS sft_rate, avg((process_reward = 0)::INTEGER) AS zero_reward_rate,
            avg(v_final) AS v_K_mean, avg(n_steps) AS steps_mean{extra}
        FROM annotations GROUP BY 1 ORDER BY traces DESC, 1 LIMIT ?
        """,
        [MAX_GROUPS + 1],
    )
    more = 0
    if len(result.rows) > MAX_GROUPS:
        total = db.query(f"SELECT count(DISTINCT {c}) FROM annotations").rows[0][0]
        more = total - MAX_GROUPS
    return GroupTable(column, result.columns, result.rows[:MAX_GROUPS], more)


def _roc(db: AuditDatabase, label_sql: str) -> dict[str, RocCurve]:
    """The ROC curve of each trace score and, last, of the outcome alone (when every row has one)."""
    scored = [*TRACE_SCORES, (OUTCOME_COLUMN, OUTCOME_CURVE)]
    scores = ", ".join(f"{column}::DOUBLE" for column, _ in scored)
    rows = db.query(
        f"SELECT ({label_sql}) AS y, {scores} FROM annotations WHERE ({label_sql}) IS NOT NULL"
    ).rows
    labels = [bool(row[0]) for row in rows]
    curves = {}
    for index, (_, shown) in enumerate(scored, start=1):
        values = [row[index] for row in rows]
        if not rows or any(value is None for value in values):
            continue
        curve = roc_curve(labels, [float(value) for value in values])
        if curve is not None:
            curves[shown] = curve
    return curves


def collect(
    db: AuditDatabase,
    *,
    by: list[str],
    sample: int,
    seed: int,
    label_col: str | None,
    drop_bad_labels: bool = False,
) -> ReportData:
    """Everything the report shows; ``sample`` traces per outcome (correct / wrong) are sampled."""
    needed = (
        "outcome",
        "process_reward",
        "max_reward",
        "v0",
        "v_final",
        "step_rewards",
        "sft_gate",
        "n_steps",
    )
    missing = [name for name in needed if name not in db.columns]
    if missing:
        raise AuditQueryError(
            f"the inputs lack the columns {', '.join(missing)}; is this an annotation dataset?"
        )
    for column in by:
        if column not in db.columns:
            raise AuditQueryError(f"--by {column}: no such column (columns: {', '.join(db.columns)})")
    notes = leave_out_non_finite_scores(db)
    kinds = sorted({source.kind for source in db.sources})
    has_detail = "steps" in db.columns
    if not has_detail:
        notes.append(
            f"audit log input: it lacks the {STEP_DETAIL}; the heatmaps show r_k only and the "
            "v/W trajectories are left out"
        )
    elif "log" in kinds:
        notes.append(f"the audit-log rows lack the {STEP_DETAIL}: their heatmaps show r_k only")
    label, label_sql, label_notes = resolve_trace_label(
        db, label_col, default_step_label(db), drop_bad_labels=drop_bad_labels
    )
    notes += label_notes
    if label is None:
        notes.append(
            "no correctness column (is_correct, final_answer_correct, correct; --label-col): no ROC curves"
        )
    if "log" in kinds:
        notes.append("audit logs carry no rejects: the rejects card counts built datasets only")
    summary = _summary(db)
    zero = db.query("SELECT count(*) FROM annotations WHERE NOT (max_reward > 0) OR n_steps = 0").rows[0][0]
    position = "list_position(step_rewards, list_max(step_rewards))::DOUBLE / len(step_rewards)"
    groups = [c for c in DEFAULT_GROUPS if c in db.columns and (c != "dataset" or len(db.sources) > 1)]
    groups += [c for c in by if c not in groups]
    if not groups:
        groups = ["dataset"]
    return ReportData(
        sources=[source.name for source in db.sources],
        kinds=kinds,
        summary=summary,
        process_reward=_histogram(db, "process_reward"),
        v_final=_histogram(db, "v_final"),
        max_position=_histogram(
            db, position, "max_reward > 0 AND n_steps > 0", (0.0, 1.0 + 1e-9), POSITION_BINS
        ),
        zero_reward_traces=zero,
        traces=_sample(db, sample, seed, label_sql),
        groups=[_group_table(db, column, label_sql if label else None) for column in groups],
        label=label,
        roc=_roc(db, label_sql) if label else {},
        notes=notes,
        has_step_detail=has_detail,
    )
