"""Audit reports against numbers computed by hand on a small fixture, and the read-only SQL guard."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mig_annotator.builder.audit.database import AuditDatabase, AuditQueryError, discover_sources
from mig_annotator.builder.audit.reports import ReportOptions, run_reports
from mig_annotator.builder.errors import DatasetError
from mig_annotator.engine.rewards import step_rewards
from mig_annotator.schemas.arrow import DATASET_ROW_SCHEMA
from tests.builder.conftest import run_cli

# trace id -> (generator, is_correct, outcome, v_0..v_K); rewards follow from the level watermark.
FIXTURE_A = {
    "t1": ("g1", True, 1, [-2.0, -1.5, -1.6, -1.3]),  # r = 0.5, 0, 0.2   sum 0.7
    "t2": ("g1", True, 1, [-1.0, -1.2, -1.1]),  # r = 0, 0           sum 0   (lucky guess)
    "t3": ("g2", False, 0, [-3.0, -2.0, -2.5, -2.6, -2.7, -1.0]),  # r = 1, 0, 0, 0, 1 sum 2 (suspect)
    "t4": ("g2", False, 0, [-2.0, -2.5]),  # r = 0              sum 0
    "t5": ("g1", True, 0, [-2.0, -1.8, -1.9]),  # r = 0.2, 0         sum 0.2
    "t6": ("g2", False, 1, [-1.5, -1.0]),  # r = 0.5            sum 0.5
}
FIXTURE_B = {  # the same traces scored with another config
    "t1": ("g1", True, 1, [-2.0, -1.5]),  # sum 0.5
    "t2": ("g1", True, 1, [-1.0, -0.9]),  # sum 0.1
    "t3": ("g2", False, 0, [-3.0, -2.0]),  # sum 1.0
}


def fixture_row(
    trace_id: str, generator: str, label: bool, outcome: int, values: list[float], config: str
) -> dict:
    rewards = step_rewards(values, "level")
    steps = [
        {
            "index": k + 1,
            "text": f"step {k + 1} of {trace_id}",
            "span": {"start": 10 * k, "end": 10 * k + 8},
            "v": values[k + 1],
            "mig": float(rewards.mig[k]),
            "watermark": float(rewards.watermark[k]),
            "reward": float(rewards.reward[k]),
        }
        for k in range(len(values) - 1)
    ]
    completion = "x" * (10 * len(steps)) + "A: 1"
    return {
        "trace_id": trace_id,
        "completion": completion,
        "v0": values[0],
        "steps": steps,
        "steps_total": len(steps),
        "truncated": False,
        "windowed_steps": 0,
        "cot_span": {"start": 0, "end": 10 * len(steps)},
        "answer": "1",
        "answer_span": {"start": len(completion) - 1, "end": len(completion)},
        "answer_part_span": {"start": 10 * len(steps), "end": len(completion)},
        "outcome": outcome,
        "process_reward": rewards.process_reward,
        "max_reward": rewards.max_reward,
        "sft_gate": outcome == 1 and rewards.process_reward > 0,
        "probe_model": "probe-1",
        "probe_identity": "fake:probe-1:float64:0123456789abcdef",
        "config_hash": config,
        "tokens_forwarded": 100,
        "answer_tokens": 1,
        "question": f"question {trace_id}",
        "reference_answer": "1",
        "source_file": "in.jsonl",
        "source_row": int(trace_id[1:]) - 1,
        "generator": generator,
        "is_correct": label,
    }


def write_dataset(folder: Path, fixture: dict, config: str) -> Path:
    folder.mkdir(parents=True)
    rows = [fixture_row(tid, *spec, config=config) for tid, spec in fixture.items()]
    schema = DATASET_ROW_SCHEMA.append(pa.field("generator", pa.string())).append(
        pa.field("is_correct", pa.bool_())
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-00000.parquet")
    (folder / "_manifest.json").write_text("{}")
    (folder / "_SUCCESS").write_text("")
    return folder


@pytest.fixture
def dataset_a(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "a_build", FIXTURE_A, "cfgA")


@pytest.fixture
def dataset_b(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "b_build", FIXTURE_B, "cfgB")


def report(paths: list[Path], name: str, **options: object):
    with AuditDatabase(discover_sources(paths)) as db:
        return run_reports(db, [name], ReportOptions(**options))[0]  # type: ignore[arg-type]


def test_reward_distribution_by_generator(dataset_a: Path) -> None:
    result = report([dataset_a], "distribution")
    rows = {r["generator"]: r for r in result.records()}
    g1, g2 = rows["g1"], rows["g2"]
    assert (g1["traces"], g2["traces"]) == (3, 3)
    assert g1["outcome_rate"] == pytest.approx(2 / 3) and g2["outcome_rate"] == pytest.approx(1 / 3)
    assert g1["sft_rate"] == pytest.approx(1 / 3) and g2["sft_rate"] == pytest.approx(1 / 3)
    assert g1["process_reward_mean"] == pytest.approx(0.3)  # (0.7 + 0 + 0.2) / 3
    assert g2["process_reward_mean"] == pytest.approx(2.5 / 3)  # (2 + 0 + 0.5) / 3
    assert (g1["p10"], g1["p50"], g1["p90"]) == pytest.approx(
        (0.04, 0.2, 0.6)
    )  # linear quantiles of 0, .2, .7
    assert g2["process_reward_max"] == pytest.approx(2.0)
    assert g1["zero_reward_rate"] == pytest.approx(1 / 3)
    assert g1["max_reward_mean"] == pytest.approx(0.7 / 3)  # (0.5 + 0 + 0.2) / 3
    assert g1["steps_mean"] == pytest.approx(7 / 3) and g2["steps_mean"] == pytest.approx(7 / 3)
    by_probe = report([dataset_a], "distribution", by="probe_model").records()
    assert [(r["probe_model"], r["traces"]) for r in by_probe] == [("probe-1", 6)]


def test_lucky_guesses_are_correct_traces_with_zero_process_reward(dataset_a: Path) -> None:
    result = report([dataset_a], "lucky")
    assert [r["trace_id"] for r in result.records()] == ["t2"]
    assert result.records()[0]["v_final"] == pytest.approx(-1.1)
    assert result.notes == ["1 of 3 correct traces have zero process reward (33.3%)"]


def test_hacking_suspects_have_high_process_reward_and_a_wrong_outcome(dataset_a: Path) -> None:
    result = report([dataset_a], "hacking")
    # process rewards sorted: 0, 0, .2, .5, .7, 2 -> 0.9 quantile = .7 + .5 * 1.3 = 1.35
    assert [r["trace_id"] for r in result.records()] == ["t3"]
    assert result.notes == [
        "1 wrong-outcome traces with process reward >= 1.3500 (the 90% quantile over all traces)"
    ]
    # 0.3 quantile = 0 + .5 * .2 = 0.1: wrong outcomes t3 (2.0) and t5 (0.2) qualify, t4 (0) does not
    lower = report([dataset_a], "hacking", high_quantile=0.3)
    assert [r["trace_id"] for r in lower.records()] == ["t3", "t5"]


def test_the_steps_with_the_largest_gains(dataset_a: Path) -> None:
    result = report([dataset_a], "top-steps", top=3)
    got = [(r["trace_id"], r["k"], round(r["mig"], 6)) for r in result.records()]
    assert got == [("t3", 5, 1.7), ("t3", 1, 1.0), ("t1", 1, 0.5)]  # t6's 0.5 loses the tie on trace id


def test_watermark_stalls_are_the_longest_zero_reward_runs(dataset_a: Path) -> None:
    result = report([dataset_a], "stalls", min_stall=2)
    got = [
        (r["trace_id"], r["longest_stall"], r["stall_start_k"], r["stall_end_k"]) for r in result.records()
    ]
    assert got == [("t3", 3, 2, 4), ("t2", 2, 1, 2)]
    assert result.notes == ["2 of 6 traces with steps have a run of >= 2 zero-reward steps (33.3%)"]


def test_label_agreement_aurocs_match_hand_counts(dataset_a: Path) -> None:
    result = report([dataset_a], "labels")
    auroc = {r["score"]: r["auroc"] for r in result.records()}
    assert [r["score"] for r in result.records()] == ["v_K", "v_K - v_0", "sum r_k", "max r_k", "outcome"]
    assert {(r["positives"], r["negatives"]) for r in result.records()} == {(3, 3)}
    # pairs (positive, negative) won by the positive, ties count half, out of 9
    assert auroc["v_K"] == pytest.approx(3 / 9)
    assert auroc["v_K - v_0"] == pytest.approx(4 / 9)
    assert auroc["sum r_k"] == pytest.approx(3.5 / 9)
    assert auroc["max r_k"] == pytest.approx(3 / 9)
    assert auroc["outcome"] == pytest.approx(6 / 9)


def test_label_agreement_without_a_label_column_says_so(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "nolabel", FIXTURE_B, "cfgB")
    table = pq.read_table(folder / "part-00000.parquet").drop_columns(["is_correct"])
    pq.write_table(table, folder / "part-00000.parquet")
    result = report([folder], "labels")
    assert result.rows == [] and "pass --label-col" in result.notes[0]
    with pytest.raises(AuditQueryError, match="--label-col nope: no such column"):
        report([folder], "labels", label_col="nope")


def test_drift_pairs_traces_across_configs(dataset_a: Path, dataset_b: Path) -> None:
    result = report([dataset_a, dataset_b], "drift")
    (row,) = result.records()
    assert (row["dataset_a"], row["config_a"], row["dataset_b"], row["config_b"]) == (
        "a_build",
        "cfgA",
        "b_build",
        "cfgB",
    )
    assert row["common_traces"] == 3
    assert row["process_reward_a"] == pytest.approx(0.9)  # (0.7 + 0 + 2) / 3
    assert row["process_reward_b"] == pytest.approx(1.6 / 3)  # (0.5 + 0.1 + 1) / 3
    assert row["mean_diff"] == pytest.approx(-1.1 / 3)
    assert row["mean_abs_diff"] == pytest.approx(1.3 / 3)
    assert row["pearson"] == pytest.approx(0.91 / (2.06 * 0.406667) ** 0.5, abs=1e-4)
    assert row["sft_agreement"] == pytest.approx(2 / 3)  # t2 passes the gate only under cfgB
    assert row["outcome_agreement"] == pytest.approx(1.0)
    single = report([dataset_a], "drift")
    assert single.rows == [] and "give several folders" in single.notes[1]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "COPY (SELECT 1 AS x) TO '{part}' (FORMAT parquet, USE_TMP_FILE false)",
        "COPY annotations TO '/tmp/mig-audit-leak.csv'",
        "ATTACH '/tmp/mig-audit.duckdb' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "CREATE TABLE leak AS SELECT * FROM annotations",
        "SELECT 1; SELECT 2",
    ],
)
def test_sql_that_reaches_outside_the_dataset_is_refused(dataset_a: Path, sql: str) -> None:
    part = dataset_a / "part-00000.parquet"
    before = part.read_bytes()
    with AuditDatabase(discover_sources([dataset_a])) as db, pytest.raises(AuditQueryError):
        db.user_query(sql.format(part=part))
    assert part.read_bytes() == before
    assert not Path("/tmp/mig-audit-leak.csv").exists()


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYZE COPY (select 42 as x) TO '{part}' (FORMAT parquet, USE_TMP_FILE false)",
        "EXPLAIN ANALYZE COPY (select 42 as x) TO '{tmp}/dropped.csv'",
        "EXPLAIN ANALYZE COPY (select 42 as x) TO '.tmp/dropped.csv'",
        "EXPLAIN (FORMAT json) COPY (select 42 as x) TO '{tmp}/dropped.csv'",
        "EXPLAIN (FORMAT ')') COPY (select 42 as x) TO '{tmp}/dropped.csv'",
        "EXPLAIN /* c */ ANALYZE -- x\n COPY (select 42 as x) TO '{tmp}/dropped.csv'",
        "EXPLAIN ANALYZE CREATE TABLE leak AS SELECT * FROM annotations",
        "EXPLAIN ANALYZE CREATE MACRO leak(a) AS a",
        "CREATE TEMP TABLE leak AS SELECT 1",
        "PIVOT annotations ON generator",
    ],
)
def test_statements_inside_explain_are_checked_too(
    dataset_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sql: str
) -> None:
    """EXPLAIN ANALYZE runs its statement: what counts is the statement DuckDB would execute."""
    monkeypatch.chdir(tmp_path)  # DuckDB's default temp folder, .tmp, is relative to the working directory
    part = dataset_a / "part-00000.parquet"
    before = part.read_bytes()
    with AuditDatabase(discover_sources([dataset_a])) as db:
        with pytest.raises(AuditQueryError, match="only SELECT queries are allowed"):
            db.user_query(sql.format(part=part, tmp=tmp_path))
        assert db.user_query("SELECT count(*) FROM annotations").rows == [(6,)]  # nothing was created
    assert part.read_bytes() == before
    assert not (tmp_path / "dropped.csv").exists() and not (tmp_path / ".tmp").exists()


def test_the_database_is_read_only_and_reaches_no_folder(dataset_a: Path) -> None:
    """Defence in depth behind the statement check: a read-only database, no temp folder, a locked
    configuration, and only the sources' files readable."""
    with AuditDatabase(discover_sources([dataset_a])) as db:
        settings = db.query(
            "SELECT current_setting('allowed_directories') AS dirs, current_setting('temp_directory') AS tmp,"
            " current_setting('enable_external_access') AS external,"
            " current_setting('lock_configuration') AS locked"
        ).records()[0]
        assert settings == {"dirs": [], "tmp": "", "external": False, "locked": True}
        with pytest.raises(AuditQueryError, match="read-only"):
            db.query("CREATE TABLE leak AS SELECT 1")
        with pytest.raises(AuditQueryError, match="disabled by configuration"):
            db.query(f"SELECT * FROM read_parquet('{dataset_a}/*.parquet')")


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN SELECT * FROM annotations",
        "EXPLAIN ANALYZE SELECT count(*) FROM steps",
        "EXPLAIN (FORMAT json) SELECT 1",
        "  -- a comment\n WITH t AS (SELECT * FROM annotations) SELECT count(*) FROM t",
        "FROM annotations SELECT trace_id",
        "SUMMARIZE annotations",
        "DESCRIBE steps",
    ],
)
def test_selects_and_explains_of_selects_run(dataset_a: Path, sql: str) -> None:
    with AuditDatabase(discover_sources([dataset_a])) as db:
        assert db.user_query(sql).rows


def test_install_is_refused_by_its_name(dataset_a: Path) -> None:
    with AuditDatabase(discover_sources([dataset_a])) as db:
        with pytest.raises(AuditQueryError, match=r"got INSTALL$"):
            db.user_query("INSTALL httpfs")
        with pytest.raises(AuditQueryError, match=r"got LOAD$"):
            db.user_query("LOAD httpfs")


def test_cli_audit_refuses_explain_analyze_copy_over_a_dataset_file(dataset_a: Path) -> None:
    """Refused with exit 2 and the part file untouched (the statement would replace it)."""
    part = dataset_a / "part-00000.parquet"
    before = part.read_bytes()
    sql = f"EXPLAIN ANALYZE COPY (select 42 as x) TO '{part}' (FORMAT parquet, USE_TMP_FILE false)"
    done = run_cli("audit", str(dataset_a), "--sql", sql)
    assert done.returncode == 2, done.stdout
    assert "only SELECT queries are allowed, got EXPLAIN ANALYZE COPY" in done.stderr
    assert part.read_bytes() == before


def test_sql_can_query_the_views(dataset_a: Path) -> None:
    with AuditDatabase(discover_sources([dataset_a])) as db:
        result = db.user_query("SELECT count(*) AS n, sum(reward) AS total FROM steps")
    assert result.columns == ["n", "total"]
    assert result.rows[0][0] == 14 and result.rows[0][1] == pytest.approx(0.7 + 2.0 + 0.2 + 0.5)


def test_unknown_sources_and_reports_are_named(tmp_path: Path, dataset_a: Path) -> None:
    with pytest.raises(DatasetError, match="not a built dataset folder"):
        discover_sources([tmp_path / "missing"])
    with (
        AuditDatabase(discover_sources([dataset_a])) as db,
        pytest.raises(AuditQueryError, match="unknown report"),
    ):
        run_reports(db, ["nope"], ReportOptions())


def test_an_audit_log_folder_of_parquet_segments_is_read_like_a_dataset(tmp_path: Path) -> None:
    log = tmp_path / "audit-log"
    write_dataset(log, FIXTURE_A, "cfgA")
    (log / "_manifest.json").unlink()
    segment = pq.read_table(log / "part-00000.parquet")
    (log / "2024" / "06").mkdir(parents=True)
    pq.write_table(segment.slice(0, 2), log / "2024" / "06" / "segment-1.parquet")
    (log / "part-00000.parquet").rename(log / "2024" / "segment-0.parquet")
    (log / ".segment-2.parquet").write_text("partial")
    sources = discover_sources([log])
    assert sources[0].kind == "log" and len(sources[0].files) == 2
    result = report([log], "distribution", by="dataset")
    assert result.records()[0]["traces"] == 8


def test_cli_audit_writes_json_and_csv_and_refuses_unsafe_sql(dataset_a: Path) -> None:
    done = run_cli("audit", str(dataset_a), "--report", "lucky", "--report", "labels", "--format", "json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert [item["report"] for item in payload] == ["lucky", "labels"]
    assert payload[0]["rows"][0]["trace_id"] == "t2"
    done = run_cli("audit", str(dataset_a), "--report", "stalls", "--min-stall", "2", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["trace_id"], r["longest_stall"]) for r in rows] == [("t3", "3"), ("t2", "2")]
    done = run_cli("audit", str(dataset_a), "--sql", "COPY annotations TO '/tmp/mig-audit-leak.csv'")
    assert done.returncode == 2 and "only SELECT queries are allowed, got COPY" in done.stderr
    done = run_cli(
        "audit", str(dataset_a), "--sql", "SELECT count(*) AS n FROM annotations", "--format", "json"
    )
    assert json.loads(done.stdout)[0]["rows"] == [{"n": 6}]
    done = run_cli("audit", str(dataset_a))
    assert done.returncode == 0 and "lucky guesses" in done.stdout and "label agreement" in done.stdout


def test_the_service_audit_log_mixes_with_built_datasets(tmp_path: Path, dataset_a: Path) -> None:
    log = tmp_path / "service-log"
    log.mkdir()
    records = []
    for trace_id, values in (("t1", [-2.0, -1.5, -1.6, -1.3]), ("t9", [-2.0, -1.7, -1.8, -1.9, -2.0])):
        rewards = step_rewards(values, "level")
        records.append(
            {
                "request_id": f"req-{trace_id}",
                "trace_id": trace_id,
                "trace_sha256": "0" * 64,
                "config_hash": "cfgA",
                "probe_model": "probe-1",
                "probe_identity": "fake:probe-1:float64:0123456789abcdef",
                "v0": values[0],
                "v_final": values[-1],
                "n_steps": len(values) - 1,
                "step_rewards": [float(r) for r in rewards.reward],
                "process_reward": rewards.process_reward,
                "max_reward": rewards.max_reward,
                "outcome": 1,
                "sft_gate": True,
                "truncated": False,
                "latency_ms": 12.5,
            }
        )
    pq.write_table(pa.Table.from_pylist(records), log / "audit-20240101T000000-1-abc-0.parquet")
    paths = [dataset_a, log]
    assert report(paths, "distribution", by="dataset").records()[1]["traces"] == 2
    stalls = report(paths, "stalls", min_stall=3).records()
    assert [(r["dataset"], r["trace_id"], r["longest_stall"]) for r in stalls] == [
        ("a_build", "t3", 3),
        ("service-log", "t9", 3),  # r = 0.3, 0, 0, 0
    ]
    (pair,) = report(paths, "drift").records()
    assert (pair["dataset_b"], pair["common_traces"], pair["mean_abs_diff"]) == ("service-log", 1, 0.0)
    gains = report(paths, "labels").records()
    assert {r["dataset"] for r in gains} == {"a_build"}  # the log has no label column
    assert [r["trace_id"] for r in report(paths, "top-steps", top=2).records()] == ["t3", "t3"]
    with pytest.raises(AuditQueryError, match="audit logs hold only r_k"):
        report([log], "top-steps")


def test_the_build_summary_statistics_match_hand_counts(dataset_a: Path) -> None:
    from mig_annotator.builder.stats import reward_stats

    stats = reward_stats([dataset_a / "part-00000.parquet"])
    assert stats["annotated"] == 6
    assert stats["outcome_rate"] == pytest.approx(0.5)  # t1, t2, t6
    assert stats["sft_rate"] == pytest.approx(2 / 6, abs=1e-6)  # t1, t6
    assert stats["process_reward_mean"] == pytest.approx(3.4 / 6, abs=1e-6)
    assert stats["process_reward_p50"] == pytest.approx(0.35)  # 0, 0, .2, .5, .7, 2
    assert stats["process_reward_max"] == pytest.approx(2.0)
    assert stats["zero_process_reward_rate"] == pytest.approx(2 / 6, abs=1e-6)
    assert stats["v_final_mean"] == pytest.approx(-8.8 / 6, abs=1e-6)
    assert stats["steps_mean"] == pytest.approx(14 / 6, abs=1e-6)
    assert (stats["lucky_guesses"], stats["truncated"]) == (1, 0)
