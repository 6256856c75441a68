"""Canned audit reports: what the rewards say, and whether they can be trusted.

Each report is one SQL query over the :mod:`builder.audit.database` views plus a few summary notes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mig_annotator.builder.audit.database import AuditDatabase, AuditQueryError, QueryResult, quote_identifier

#: The trace-level scores whose agreement with a label column is measured, as (column, shown name).
LABEL_SCORES = (
    ("v_final", "v_K"),
    ("v_gain", "v_K - v_0"),
    ("process_reward", "sum r_k"),
    ("max_reward", "max r_k"),
    ("outcome", "outcome"),
)
DEFAULT_GROUP_COLUMNS = ("generator", "model", "policy_model", "probe_model")
DEFAULT_LABEL_COLUMNS = ("is_correct", "correct", "label")


@dataclass(frozen=True)
class ReportOptions:
    by: str | None = None
    top: int = 20
    label_col: str | None = None
    drop_bad_labels: bool = False
    min_stall: int = 3
    high_quantile: float = 0.9


@dataclass
class Report:
    name: str
    title: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    notes: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        return QueryResult(self.columns, self.rows).records()


def _require(db: AuditDatabase, report: str, needed: tuple[str, ...]) -> None:
    missing = [name for name in needed if name not in db.columns]
    if missing:
        raise AuditQueryError(
            f"report {report!r} needs the columns {', '.join(missing)}, which the sources lack "
            f"(columns: {', '.join(db.columns)})"
        )


def _require_steps(db: AuditDatabase, report: str, needed: tuple[str, ...]) -> None:
    missing = [name for name in needed if name not in db.step_columns]
    if missing:
        raise AuditQueryError(
            f"report {report!r} needs the step columns {', '.join(missing)}, which the sources lack "
            "(audit logs hold only r_k per step; give a built dataset)"
        )


def _optional(db: AuditDatabase, *names: str) -> str:
    """``, col`` for each of ``names`` the sources have."""
    return "".join(f", {quote_identifier(name)}" for name in names if name in db.columns)


def _group_column(db: AuditDatabase, options: ReportOptions) -> str:
    if options.by is not None:
        if options.by not in db.columns:
            raise AuditQueryError(f"--by {options.by}: no such column (columns: {', '.join(db.columns)})")
        return options.by
    return next(name for name in (*DEFAULT_GROUP_COLUMNS, "dataset") if name in db.columns)


def _report(name: str, title: str, result: QueryResult, notes: list[str] | None = None) -> Report:
    return Report(name, title, result.columns, result.rows, notes or [])


def distribution(db: AuditDatabase, options: ReportOptions) -> Report:
    _require(db, "distribution", ("outcome", "process_reward", "max_reward", "sft_gate", "n_steps"))
    group = _group_column(db, options)
    result = db.query(
        f"""
        SELECT dataset, {quote_identifier(group)} AS {quote_identifier(group)}, count(*) AS traces,
            avg(outcome) AS outcome_rate, avg(sft_gate::INTEGER) AS sft_rate,
            avg(process_reward) AS process_reward_mean,
            quantile_cont(process_reward, 0.1) AS p10, quantile_cont(process_reward, 0.5) AS p50,
            quantile_cont(process_reward, 0.9) AS p90, max(process_reward) AS process_reward_max,
            avg((process_reward = 0)::INTEGER) AS zero_reward_rate, avg(max_reward) AS max_reward_mean,
            avg(n_steps) AS steps_mean
        FROM annotations GROUP BY 1, 2 ORDER BY 1, 2
        """
    )
    return _report("distribution", f"reward distribution by {group}", result)


def lucky_guesses(db: AuditDatabase, options: ReportOptions) -> Report:
    _require(db, "lucky", ("trace_id", "outcome", "process_reward", "v_final", "v_gain"))
    group = _group_column(db, options)
    g = quote_identifier(group)
    counts = db.query(
        "SELECT count(*) FILTER (outcome = 1 AND process_reward = 0), count(*) FILTER (outcome = 1) "
        "FROM annotations"
    ).rows[0]
    result = db.query(
        f"""
        SELECT dataset, trace_id, {g} AS {g}{_optional(db, "answer")}, v0, v_final, n_steps
        FROM annotations WHERE outcome = 1 AND process_reward = 0
        ORDER BY v_gain, dataset, trace_id LIMIT ?
        """,
        [options.top],
    )
    share = counts[0] / counts[1] if counts[1] else 0.0
    note = f"{counts[0]} of {counts[1]} correct traces have zero process reward ({share:.1%})"
    return _report("lucky", "lucky guesses: correct outcome, zero process reward", result, [note])


def hacking_suspects(db: AuditDatabase, options: ReportOptions) -> Report:
    _require(db, "hacking", ("trace_id", "outcome", "process_reward", "max_reward", "n_steps"))
    group = _group_column(db, options)
    g = quote_identifier(group)
    threshold = db.query(
        "SELECT quantile_cont(process_reward, ?) FROM annotations", [options.high_quantile]
    ).rows[0][0]
    threshold = float(threshold or 0.0)
    where = "outcome = 0 AND process_reward >= ? AND process_reward > 0"
    total = db.query(f"SELECT count(*) FROM annotations WHERE {where}", [threshold]).rows[0][0]
    result = db.query(
        f"""
        SELECT dataset, trace_id, {g} AS {g}{_optional(db, "answer")}, process_reward, max_reward, n_steps
        FROM annotations WHERE {where}
        ORDER BY process_reward DESC, dataset, trace_id LIMIT ?
        """,
        [threshold, options.top],
    )
    note = (
        f"{total} wrong-outcome traces with process reward >= {threshold:.4f} "
        f"(the {options.high_quantile:.0%} quantile over all traces)"
    )
    return _report("hacking", "reward-hacking suspects: high process reward, wrong outcome", result, [note])


def top_steps(db: AuditDatabase, options: ReportOptions) -> Report:
    _require_steps(db, "top-steps", ("trace_id", "k", "text", "v", "mig", "reward", "outcome"))
    result = db.query(
        """
        SELECT dataset, trace_id, k, text, v, mig, reward, outcome
        FROM steps WHERE mig IS NOT NULL ORDER BY mig DESC, dataset, trace_id, k LIMIT ?
        """,
        [options.top],
    )
    return _report("top-steps", "steps with the largest gains (mig_k)", result)


def watermark_stalls(db: AuditDatabase, options: ReportOptions) -> Report:
    _require(db, "stalls", ("trace_id", "process_reward", "outcome", "n_steps"))
    _require_steps(db, "stalls", ("k", "reward"))
    stalls_sql = """
        WITH flagged AS (
            SELECT dataset, row_key, trace_id, k, reward = 0 AS zero FROM steps
        ), islands AS (
            SELECT *, k - row_number() OVER (PARTITION BY dataset, row_key, zero ORDER BY k) AS island
            FROM flagged
        ), runs AS (
            SELECT dataset, row_key, min(k) AS start_k, count(*) AS length
            FROM islands WHERE zero GROUP BY dataset, row_key, island
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY dataset, row_key ORDER BY length DESC, start_k) AS place
            FROM runs
        )
        SELECT a.dataset, a.trace_id, r.length AS longest_stall, r.start_k AS stall_start_k,
            r.start_k + r.length - 1 AS stall_end_k, a.n_steps, a.process_reward, a.outcome
        FROM ranked r JOIN annotations a USING (dataset, row_key)
        WHERE r.place = 1 AND r.length >= ?
    """
    summary = db.query(f"SELECT count(*), avg(longest_stall) FROM ({stalls_sql})", [options.min_stall]).rows[
        0
    ]
    with_steps = db.query("SELECT count(*) FROM annotations WHERE n_steps > 0").rows[0][0]
    result = db.query(
        f"SELECT * FROM ({stalls_sql}) ORDER BY longest_stall DESC, dataset, trace_id LIMIT ?",
        [options.min_stall, options.top],
    )
    share = summary[0] / with_steps if with_steps else 0.0
    note = (
        f"{summary[0]} of {with_steps} traces with steps have a run of >= {options.min_stall} "
        f"zero-reward steps ({share:.1%})"
    )
    return _report("stalls", "watermark stalls: longest runs of zero-reward steps", result, [note])


def drift(db: AuditDatabase, options: ReportOptions) -> Report:
    _require(db, "drift", ("trace_id", "config_hash", "probe_model", "process_reward", "outcome", "sft_gate"))
    result = db.query(
        """
        WITH g AS (
            SELECT dataset, config_hash, probe_model, trace_id,
                arg_min(process_reward, row_key) AS pr, arg_min(outcome, row_key) AS o,
                arg_min(sft_gate, row_key) AS s
            FROM annotations GROUP BY ALL
        )
        SELECT a.dataset AS dataset_a, a.config_hash AS config_a, a.probe_model AS probe_a,
            b.dataset AS dataset_b, b.config_hash AS config_b, b.probe_model AS probe_b,
            count(*) AS common_traces, avg(a.pr) AS process_reward_a, avg(b.pr) AS process_reward_b,
            avg(b.pr - a.pr) AS mean_diff, avg(abs(b.pr - a.pr)) AS mean_abs_diff,
            corr(a.pr, b.pr) AS pearson, avg((a.s = b.s)::INTEGER) AS sft_agreement,
            avg((a.o = b.o)::INTEGER) AS outcome_agreement
        FROM g a JOIN g b ON a.trace_id = b.trace_id
            AND (a.dataset, a.config_hash, a.probe_model) < (b.dataset, b.config_hash, b.probe_model)
        GROUP BY ALL ORDER BY ALL
        """
    )
    groups = db.query(
        "SELECT count(*) FROM (SELECT DISTINCT dataset, config_hash, probe_model FROM annotations)"
    ).rows[0][0]
    notes = [f"{groups} (dataset, config, probe model) groups"]
    if groups < 2:
        notes.append("drift compares two or more builds (configs or probe models): give several folders")
    return _report("drift", "drift between configs and probe models (paired by trace_id)", result, notes)


def label_agreement(db: AuditDatabase, options: ReportOptions) -> Report:
    _require(db, "labels", ("v_final", "v_gain", "process_reward", "max_reward", "outcome"))
    label = options.label_col or next((c for c in DEFAULT_LABEL_COLUMNS if c in db.columns), None)
    if label is None:
        return Report(
            "labels",
            "label agreement (AUROC)",
            [],
            [],
            ["no label column (is_correct, correct, label): pass --label-col NAME"],
        )
    if label not in db.columns:
        raise AuditQueryError(f"--label-col {label}: no such column (columns: {', '.join(db.columns)})")
    from mig_annotator.builder.evaluation.screening import label_sql, non_finite_scores

    label_expression, label_notes = label_sql(
        db, label, drop_bad_labels=options.drop_bad_labels, flag="--drop-bad-labels"
    )
    non_finite, score_notes = non_finite_scores(db)  # as `eval` does: such rows left out, and counted
    scores = ", ".join(f"{column}::DOUBLE AS {quote_identifier(shown)}" for column, shown in LABEL_SCORES)
    order = " ".join(f"WHEN {_sql_text(shown)} THEN {i}" for i, (_, shown) in enumerate(LABEL_SCORES))
    result = db.query(
        f"""
        WITH base AS (
            SELECT dataset, {label_expression} AS label, {scores}
            FROM annotations WHERE NOT ({non_finite})
        ), long AS (
            UNPIVOT (SELECT * FROM base WHERE label IS NOT NULL)
            ON COLUMNS(* EXCLUDE (dataset, label)) INTO NAME score VALUE value
        ), ranked AS (
            SELECT dataset, score, label,
                rank() OVER (PARTITION BY dataset, score ORDER BY value)
                + (count(*) OVER (PARTITION BY dataset, score, value) - 1) / 2.0 AS mid_rank
            FROM long
        ), sums AS (
            SELECT dataset, score, count(*) AS n, count(*) FILTER (label) AS positives,
                count(*) FILTER (NOT label) AS negatives, sum(mid_rank) FILTER (label) AS positive_ranks
            FROM ranked GROUP BY dataset, score
        )
        SELECT dataset, score, n, positives, negatives,
            CASE WHEN positives > 0 AND negatives > 0
                THEN (positive_ranks - positives * (positives + 1) / 2.0) / (positives * negatives)
            END AS auroc
        FROM sums ORDER BY dataset, CASE score {order} END
        """
    )
    note = f"AUROC of each trace-level score against {label!r} (0.5 = chance, ties count half)"
    notes = [note, *score_notes, *label_notes]
    return _report("labels", f"label agreement with {label}", result, notes)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


REPORTS: dict[str, Callable[[AuditDatabase, ReportOptions], Report]] = {
    "distribution": distribution,
    "lucky": lucky_guesses,
    "hacking": hacking_suspects,
    "top-steps": top_steps,
    "stalls": watermark_stalls,
    "drift": drift,
    "labels": label_agreement,
}


def run_reports(db: AuditDatabase, names: list[str], options: ReportOptions) -> list[Report]:
    unknown = [name for name in names if name not in REPORTS]
    if unknown:
        raise AuditQueryError(f"unknown report(s) {', '.join(unknown)}; choose from {', '.join(REPORTS)}")
    return [REPORTS[name](db, options) for name in names]
