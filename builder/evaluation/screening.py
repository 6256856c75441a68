"""Rows `eval` and `report` cannot score or label: found, counted, named, and left out (or refused).

Scores (``v0``, ``v_final``, ``v_gain``, ``process_reward``, ``max_reward`` and every ``step_rewards`` entry)
must be finite: a row with a NaN or infinite one is left out, with a count and sample ids in the notes.
Correctness labels must be booleans or the numbers 0 and 1: any other value (NaN, 0.5, 2, -1, a string) is an
error naming the column and a sample value, unless ``drop_bad_labels`` is set, when such rows are left out
with a count. Missing (NULL) labels are left out as before.
"""

from __future__ import annotations

from mig_annotator.builder.audit.database import AuditDatabase, AuditQueryError, quote_identifier

SCORE_COLUMNS = ("v0", "v_final", "v_gain", "process_reward", "max_reward")
NUMERIC_TYPES = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "FLOAT",
        "DOUBLE",
    }
)
SAMPLE_IDS = 5


def _non_finite_sql(db: AuditDatabase) -> str:
    checks = [f"coalesce(NOT isfinite({quote_identifier(c)}::DOUBLE), false)" for c in SCORE_COLUMNS]
    checks = [check for check, c in zip(checks, SCORE_COLUMNS, strict=True) if c in db.columns]
    if "step_rewards" in db.columns:
        checks.append("coalesce(list_bool_or([NOT isfinite(r::DOUBLE) FOR r IN step_rewards]), false)")
    return " OR ".join(checks) or "false"


def non_finite_scores(db: AuditDatabase) -> tuple[str, list[str]]:
    """A SQL condition true for the rows with a NaN or infinite score, and the notes saying how many
    (with sample ids) a query that leaves them out leaves out."""
    bad = _non_finite_sql(db)
    count, ids = db.query(
        f"SELECT count(*), list(coalesce(trace_id::VARCHAR, row_key) ORDER BY row_key)[1:{SAMPLE_IDS}] "
        f"FROM annotations WHERE {bad}"
    ).rows[0]
    if not count:
        return bad, []
    shown = ", ".join(str(i)[:80] for i in ids or [])
    return bad, [f"{count} rows with a NaN or infinite score were left out (e.g. {shown})"]


def leave_out_non_finite_scores(db: AuditDatabase) -> list[str]:
    """Restrict ``annotations`` to rows whose scores are all finite; the notes say what was left out."""
    bad, notes = non_finite_scores(db)
    if notes:
        db.restrict(f"NOT ({bad})")
    return notes


def label_sql(db: AuditDatabase, column: str, *, drop_bad_labels: bool, flag: str) -> tuple[str, list[str]]:
    """A SQL boolean for ``column`` (NULL where the row is left out) and notes; bad values are refused.

    ``flag`` names the option that leaves bad values out instead, for the error message.
    """
    types = {row[0]: str(row[1]) for row in db.query("DESCRIBE annotations").rows}
    kind = types[column]
    c = quote_identifier(column)
    if kind == "BOOLEAN":
        return c, []
    if kind in NUMERIC_TYPES:
        good = f"{c}::DOUBLE IN (0, 1)"
        expression = f"(CASE WHEN {good} THEN {c}::DOUBLE = 1 END)"
    else:
        good = "false"
        expression = "NULL::BOOLEAN"
    count, sample = db.query(
        f"SELECT count(*), any_value({c}::VARCHAR) FROM annotations WHERE {c} IS NOT NULL AND NOT ({good})"
    ).rows[0]
    if not count:
        return expression, []
    if not drop_bad_labels:
        raise AuditQueryError(
            f"label column {column!r} ({kind}) must hold booleans or 0/1; {count} rows hold other values, "
            f"e.g. {str(sample)[:80]!r} (pass {flag} to leave those rows out)"
        )
    return expression, [f"{count} rows whose {column!r} is not a boolean or 0/1 were left out"]
