"""Building datasets with the real probe: formats, presets, outputs, rejects and refusals."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from mig_annotator.builder import sources as builder_sources
from mig_annotator.builder.columns import resolve_mapping
from mig_annotator.builder.errors import BuildError, OutputConflictError, RejectedRowError
from mig_annotator.builder.layout import OutputLayout
from mig_annotator.builder.manifest import read_manifest
from mig_annotator.builder.pipeline import run_build
from mig_annotator.engine.annotator import Annotator
from mig_annotator.schemas import ScoringConfig, Trace
from mig_annotator.schemas.arrow import REJECT_SCHEMA, dataset_schema
from tests.builder.conftest import (
    FAKE_IDENTITY,
    FakeProbe,
    arithmetic_rows,
    make_plan,
    run_cli,
    write_jsonl,
)

ROWS = arithmetic_rows(3, seed=11)


def write_format(folder: Path, fmt: str) -> Path:
    if fmt == "jsonl":
        return write_jsonl(folder / "in.jsonl", ROWS)
    if fmt == "jsonl.gz":
        path = folder / "in.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in ROWS)
        return path
    path = folder / "in.parquet"
    pl.DataFrame(ROWS).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def engine_reference(probe) -> dict[str, dict[str, object]]:
    traces = [
        Trace(
            id=r["id"],
            question=r["question"],
            completion=r["completion"],
            reference_answer=r["reference_answer"],
        )
        for r in ROWS
    ]
    return {a.trace_id: a.model_dump() for a in Annotator(probe, ScoringConfig()).annotate(traces)}


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "parquet"])
def test_builds_from_each_input_format_match_the_engine(
    tmp_path: Path, fmt: str, probe, real_identity, engine_reference
) -> None:
    source = write_format(tmp_path, fmt)
    result = run_build(make_plan(real_identity, [source], tmp_path / "out", group_rows=3), probe)
    table = pl.read_parquet(tmp_path / "out" / "part-00000.parquet")
    assert table["trace_id"].to_list() == [row["id"] for row in ROWS]
    assert table["generator"].to_list() == [row["generator"] for row in ROWS]
    assert table["is_correct"].to_list() == [row["is_correct"] for row in ROWS]
    assert table["source_row"].to_list() == [0, 1, 2]
    assert set(table["source_file"].to_list()) == {str(source.resolve())}
    for row in table.iter_rows(named=True):
        expected = engine_reference[row["trace_id"]]
        assert row["question"] == next(r["question"] for r in ROWS if r["id"] == row["trace_id"])
        assert row["outcome"] == expected["outcome"]
        assert row["v0"] == pytest.approx(expected["v0"], abs=1e-4)
        assert row["process_reward"] == pytest.approx(expected["process_reward"], abs=1e-4)
        assert [s["reward"] for s in row["steps"]] == pytest.approx(
            [s["reward"] for s in expected["steps"]], abs=1e-4
        )
        assert [s["span"] for s in row["steps"]] == [s["span"] for s in expected["steps"]]
    manifest = result.manifest
    assert manifest.status == "complete"
    assert manifest.counts is not None and manifest.counts.annotated == 3 and manifest.counts.rejected == 0
    assert manifest.identity.inputs[0].format == fmt
    assert manifest.identity.config_hash == ScoringConfig().config_hash()
    assert manifest.identity.probe == probe.identity() and manifest.identity.probe.model == probe.model_id
    assert (tmp_path / "out" / "_SUCCESS").is_file()
    assert not (tmp_path / "out" / "_work").exists()


def test_presets_read_verl_trl_and_gsm8k_layouts(tmp_path: Path, probe, real_identity) -> None:
    row = ROWS[0]
    verl = {
        "data_source": "gsm8k",
        "prompt": [{"role": "system", "content": "Think."}, {"role": "user", "content": row["question"]}],
        "response": row["completion"],
        "reward_model": {"style": "rule", "ground_truth": row["reference_answer"]},
    }
    trl = {
        "prompt": [{"role": "user", "content": row["question"]}],
        "completion": [{"role": "assistant", "content": row["completion"]}],
        "solution": int(row["reference_answer"]),
    }
    pl.DataFrame([verl, verl]).write_parquet(tmp_path / "verl.parquet")
    write_jsonl(tmp_path / "trl.jsonl", [trl])
    write_jsonl(tmp_path / "gsm8k.jsonl", [row])
    outputs = {}
    for preset, source in (("verl", "verl.parquet"), ("trl", "trl.jsonl"), ("gsm8k", "gsm8k.jsonl")):
        plan = make_plan(
            real_identity,
            [tmp_path / source],
            tmp_path / preset,
            preset=preset,
            columns=resolve_mapping(preset),
        )
        run_build(plan, probe)
        outputs[preset] = pl.read_parquet(tmp_path / preset / "part-00000.parquet")
    assert outputs["verl"]["trace_id"].to_list() == ["row-0", "row-1"]
    assert outputs["verl"]["question"].to_list() == [row["question"]] * 2
    assert outputs["verl"]["reward_model"].to_list()[0] == verl["reward_model"]
    assert outputs["verl"]["data_source"].to_list() == ["gsm8k"] * 2
    assert outputs["trl"]["completion"].to_list() == [row["completion"]]
    assert outputs["trl"]["reference_answer"].to_list() == [row["reference_answer"]]
    assert outputs["gsm8k"]["trace_id"].to_list() == [row["id"]]
    same = [outputs[p]["process_reward"][0] for p in ("verl", "trl", "gsm8k")]
    assert same == pytest.approx([same[0]] * 3, abs=1e-4)


def test_the_output_reads_as_is_in_polars_duckdb_pyarrow_and_datasets(
    built_dataset: Path, tmp_path: Path
) -> None:
    from datasets import load_dataset

    parts = sorted(str(p) for p in built_dataset.glob("part-*.parquet"))
    assert len(parts) == 2
    frame = pl.read_parquet(parts)
    assert frame.height == 8
    assert frame.schema["steps"] == pl.List(
        pl.Struct(
            {
                "index": pl.Int64,
                "text": pl.String,
                "span": pl.Struct({"start": pl.Int64, "end": pl.Int64}),
                "v": pl.Float64,
                "mig": pl.Float64,
                "watermark": pl.Float64,
                "reward": pl.Float64,
            }
        )
    )
    arrow = pq.read_table(parts)
    manifest = read_manifest(built_dataset / "_manifest.json")
    assert manifest is not None
    expected_schema = dataset_schema(token_columns=True, kept=None)
    for field in expected_schema:
        assert arrow.schema.field(field.name).type == field.type, field.name
    con = duckdb.connect()
    total, steps = con.execute(f"SELECT count(*), sum(len(steps)) FROM read_parquet({parts!r})").fetchone()  # type: ignore[misc]
    assert (total, steps) == (8, sum(len(s) for s in frame["steps"].to_list()))
    dataset = load_dataset("parquet", data_files=parts, split="train", cache_dir=str(tmp_path / "hf"))
    assert dataset.num_rows == 8
    assert dataset[0]["trace_id"] == frame["trace_id"][0]
    assert dataset[0]["steps"][0]["span"] == frame["steps"][0][0]["span"]
    assert dataset[0]["token_rewards"] == pytest.approx(frame["token_rewards"][0].to_list())
    with (built_dataset / "part-00000.parquet").open("rb") as handle:
        assert pq.ParquetFile(handle).metadata.row_group(0).column(0).compression == "ZSTD"


def test_bad_rows_go_to_rejects_with_reason_and_location_and_the_build_goes_on(
    tmp_path: Path, probe, real_identity
) -> None:
    good = arithmetic_rows(3, seed=5)
    bad_null = good[0] | {"id": "bad-null", "question": None}
    bad_empty = good[0] | {"id": "bad-empty", "completion": "  "}
    too_long = good[0] | {"id": "too-long", "completion": "step " * 9000 + "\nA: 1"}
    bad_answer = good[0] | {"id": "bad-answer", "reference_answer": ""}
    rows = [good[0], bad_null, good[1], bad_empty, too_long, bad_answer, good[2]]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run_build(
        make_plan(real_identity, [source], tmp_path / "out", group_rows=2, window_rows=4), probe
    )
    annotated = pl.read_parquet(tmp_path / "out" / "part-00000.parquet")
    assert annotated["trace_id"].to_list() == [good[0]["id"], good[1]["id"], good[2]["id"]]
    rejects = pq.read_table(tmp_path / "out" / "_rejects.parquet")
    assert rejects.schema.equals(REJECT_SCHEMA)
    found = rejects.to_pylist()
    assert [(r["trace_id"], r["source_row"], r["stage"], r["field"]) for r in found] == [
        ("bad-null", 1, "mapping", "question"),
        ("bad-empty", 3, "mapping", "completion"),
        ("too-long", 4, "prepare", "completion"),
        ("bad-answer", 5, "mapping", "reference_answer"),
    ]
    assert found[0]["reason"] == "column 'question' is missing (null) in this row"
    assert "over the probe's context limit of 8192" in found[2]["reason"]
    assert {r["source_file"] for r in found} == {str(source.resolve())}
    assert json.loads(found[1]["row_json"]) == bad_empty
    counts = result.manifest.counts
    assert counts is not None
    assert (counts.input_rows, counts.annotated, counts.rejected) == (7, 3, 4)
    assert counts.rejects_by_stage == {"mapping": 3, "prepare": 1}


def test_a_lone_surrogate_id_is_a_reject_and_the_build_finishes_every_time(tmp_path: Path) -> None:
    """JSON may spell a lone surrogate ("\\ud800"), which UTF-8 cannot hold: writing its reject record crashed
    every run with UnicodeEncodeError. The reject names it by its escape."""
    rows = arithmetic_rows(3)
    rows[1]["id"] = "\ud800"
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    plan = make_plan(FAKE_IDENTITY, [source], tmp_path / "out")
    counts = run_build(plan, FakeProbe()).manifest.counts
    assert counts is not None and (counts.annotated, counts.rejected) == (2, 1)
    [reject] = pq.read_table(tmp_path / "out" / "_rejects.parquet").to_pylist()
    assert (reject["source_row"], reject["trace_id"], reject["field"]) == (1, "\\ud800", "id")
    assert json.loads(reject["row_json"]) == rows[1]
    assert run_build(plan, FakeProbe()).already_complete


def test_a_row_over_the_byte_limit_is_a_reject_and_the_others_are_built(tmp_path: Path) -> None:
    rows = arithmetic_rows(3)
    rows[1]["completion"] = "z" * 5000
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    plan = make_plan(FAKE_IDENTITY, [source], tmp_path / "out", max_row_bytes=2048)
    assert plan.identity.max_row_bytes == 2048
    counts = run_build(plan, FakeProbe()).manifest.counts
    assert counts is not None and (counts.annotated, counts.rejected) == (2, 1)
    [reject] = pq.read_table(tmp_path / "out" / "_rejects.parquet").to_pylist()
    assert (reject["source_row"], reject["stage"], reject["trace_id"]) == (1, "mapping", None)
    size = len(json.dumps(rows[1]))
    assert reject["reason"] == (
        f"{source.resolve()} line 2: {size:,} bytes, over the limit of 2,048 bytes per row "
        "(max_row_bytes, --max-row-bytes); the row was not read"
    )


def test_fail_on_reject_stops_at_the_first_bad_row(tmp_path: Path) -> None:
    rows = arithmetic_rows(3)
    rows[1]["question"] = ""
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    plan = make_plan(FAKE_IDENTITY, [source], tmp_path / "out", fail_on_reject=True)
    expected = r"in.jsonl row 1 \(trace 'arith-001'\): mapping: column 'question': must not be empty"
    with pytest.raises(RejectedRowError, match=expected):
        run_build(plan, FakeProbe())
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_a_changed_config_or_input_refuses_to_mix_unless_overwrite(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", arithmetic_rows(4))
    out = tmp_path / "out"
    run_build(make_plan(FAKE_IDENTITY, [source], out), FakeProbe())
    again = run_build(make_plan(FAKE_IDENTITY, [source], out), FakeProbe())
    assert again.already_complete

    other_config = ScoringConfig(sft_threshold=0.5)
    with pytest.raises(OutputConflictError, match=r"changed: config_hash, scoring\.sft_threshold"):
        run_build(make_plan(FAKE_IDENTITY, [source], out, scoring=other_config), FakeProbe())

    write_jsonl(source, arithmetic_rows(4, seed=9))
    with pytest.raises(OutputConflictError, match=r"inputs\[0\]\.sha256.*--overwrite"):
        run_build(make_plan(FAKE_IDENTITY, [source], out), FakeProbe())

    result = run_build(
        make_plan(FAKE_IDENTITY, [source], out, scoring=other_config, overwrite=True), FakeProbe()
    )
    assert not result.already_complete
    assert result.manifest.identity.config_hash == other_config.config_hash()
    assert pl.read_parquet(out / "part-00000.parquet")["config_hash"].unique().to_list() == [
        other_config.config_hash()
    ]


def test_a_build_is_not_continued_or_run_with_a_different_probe(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", arithmetic_rows(4))
    out = tmp_path / "out"
    first, second = FakeProbe(seed=1), FakeProbe(seed=2)
    assert first.identity() != second.identity() and first.model_id == second.model_id
    with pytest.raises(SimulatedStop):
        run_build(make_plan(first.identity(), [source], out, group_rows=2), first, StopAfterRows(2))
    manifest = read_manifest(out / "_manifest.json")
    assert manifest is not None and manifest.status == "building"
    assert manifest.identity.probe == first.identity()

    refused = rf"was built with the probe {first.identity().fingerprint} .* this build's probe is " + (
        rf"{second.identity().fingerprint} .*not continued with another probe"
    )
    with pytest.raises(OutputConflictError, match=refused):
        run_build(make_plan(second.identity(), [source], out, group_rows=2), second)
    with pytest.raises(
        BuildError, match=r"the probe is fake:fake-probe:float64:\w+ .* but the build was planned"
    ):
        run_build(make_plan(first.identity(), [source], out, group_rows=2), second)

    resumed = run_build(make_plan(first.identity(), [source], out, group_rows=2), first)
    assert resumed.resumed_rows == 2 and resumed.manifest.status == "complete"
    identities = pl.read_parquet(out / "part-00000.parquet")["probe_identity"].unique().to_list()
    assert identities == [first.identity().fingerprint]


class SimulatedStop(BaseException):
    """Stops a build from its observer, as a kill would."""


class StopAfterRows:
    """An observer that stops the build once ``rows`` rows are committed."""

    def __init__(self, rows: int) -> None:
        self.rows, self.seen = rows, 0

    def on_start(self, plan: object, done_rows: int) -> None:
        pass

    def on_rows(self, rows: int, annotated: int, rejected: int, tokens: int) -> None:
        self.seen += rows
        if self.seen >= self.rows:
            raise SimulatedStop

    def on_finish(self, result: object) -> None:
        pass


def test_a_folder_with_foreign_files_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", arithmetic_rows(2))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(OutputConflictError, match=r"holds files no build wrote \(notes.txt\)"):
        run_build(make_plan(FAKE_IDENTITY, [source], tmp_path / "out", overwrite=True), FakeProbe())
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_limit_reads_only_the_first_rows_and_shards_cut_the_output(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", arithmetic_rows(10))
    result = run_build(
        make_plan(FAKE_IDENTITY, [source], tmp_path / "out", limit=7, shard_rows=3, window_rows=2),
        FakeProbe(),
    )
    parts = OutputLayout(tmp_path / "out").parts()
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.ParquetFile(p).metadata.num_rows for p in parts] == [3, 3, 1]
    assert pl.read_parquet(parts)["trace_id"].to_list() == [f"arith-{i:03d}" for i in range(7)]
    assert result.manifest.files == [p.name for p in parts] + ["_rejects.parquet"]


def test_cli_dry_run_prints_three_annotated_rows_and_writes_nothing(tmp_path: Path) -> None:
    rows = arithmetic_rows(5, seed=2)
    rows[1]["reference_answer"] = None
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_cli("build", str(source), "--out", str(tmp_path / "out"), "--dry-run")
    assert done.returncode == 0, done.stderr
    for row in (rows[0], rows[2], rows[3]):
        assert row["id"] in done.stdout
    assert rows[4]["id"] not in done.stdout
    assert "reject" in done.stdout and "column 'reference_answer' is missing" in done.stdout
    assert "dry run: 3 annotated, 1 rejected of 5 rows read" in done.stdout
    assert not (tmp_path / "out").exists()


def test_cli_names_a_missing_column_and_the_columns_found(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q", "completion": "c", "answer": "1"}])
    done = run_cli("build", str(source), "--out", str(tmp_path / "out"), "--answer-col", "answer")
    assert done.returncode == 2
    assert "column 'question' (--question-col, preset 'default') not found" in done.stderr
    assert "columns found: prompt, completion, answer" in done.stderr


def test_lines_that_do_not_parse_are_rejected_with_the_line_as_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builder_sources, "JSONL_INFER_ROWS", 2)  # types come from the first two lines
    rows = arithmetic_rows(3)
    mismatched = json.dumps(rows[1] | {"is_correct": "maybe"})
    text = f"{json.dumps(rows[0])}\n{{not json\n\n{mismatched}\n{json.dumps(rows[2])}\n"
    (tmp_path / "in.jsonl").write_text(text)
    result = run_build(make_plan(FAKE_IDENTITY, [tmp_path / "in.jsonl"], tmp_path / "out"), FakeProbe())
    assert pl.read_parquet(tmp_path / "out" / "part-00000.parquet")["trace_id"].to_list() == [
        "arith-000",
        "arith-002",
    ]
    rejects = pq.read_table(tmp_path / "out" / "_rejects.parquet").to_pylist()
    assert [(r["source_row"], r["stage"], r["row_json"]) for r in rejects] == [
        (1, "mapping", "{not json"),
        (2, "mapping", mismatched),
    ]
    assert all("does not parse as a JSON object with the file's column types" in r["reason"] for r in rejects)
    assert result.manifest.counts is not None and result.manifest.counts.input_rows == 4


def test_a_second_build_into_a_folder_being_written_is_refused(tmp_path: Path) -> None:
    from mig_annotator.builder.storage import FolderLock

    source = write_jsonl(tmp_path / "in.jsonl", arithmetic_rows(2))
    out = tmp_path / "out"
    with FolderLock(OutputLayout(out).lock, out), pytest.raises(OutputConflictError, match="another build"):
        run_build(make_plan(FAKE_IDENTITY, [source], out), FakeProbe())
    assert run_build(make_plan(FAKE_IDENTITY, [source], out), FakeProbe()).manifest.status == "complete"


def test_an_output_folder_holding_an_input_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "data" / "in.jsonl", arithmetic_rows(2))
    with pytest.raises(OutputConflictError, match="an input file lies inside the output folder"):
        run_build(make_plan(FAKE_IDENTITY, [source], tmp_path), FakeProbe())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_cli_builds_with_the_probe_its_flags_name_and_says_when_it_is_unreachable(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", arithmetic_rows(1))
    out = tmp_path / "out"
    done = run_cli(
        "build",
        str(source),
        "--out",
        str(out),
        "--backend",
        "vllm-server",
        "--base-url",
        "http://127.0.0.1:9",
    )
    assert done.returncode == 2
    assert "the vLLM server at http://127.0.0.1:9 is unavailable" in " ".join(done.stderr.split())
    assert not out.exists()


def test_cli_builds_with_the_fake_backend_and_records_its_identity(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", arithmetic_rows(2))
    out = tmp_path / "out"
    done = run_cli("build", str(source), "--out", str(out), "--backend", "fake", "--no-progress")
    assert done.returncode == 0, done.stderr
    manifest = read_manifest(out / "_manifest.json")
    assert manifest is not None and manifest.identity.probe == FAKE_IDENTITY
    rows = pl.read_parquet(out / "part-00000.parquet")
    assert rows["probe_identity"].to_list() == [FAKE_IDENTITY.fingerprint] * 2


def test_cli_off_a_terminal_prints_plain_progress_lines_with_rejects_rate_and_eta(tmp_path: Path) -> None:
    """`build > build.log 2>&1` printed only `starting: 500 rows` until the end: off a terminal the bar draws
    nothing, so plain lines go to stderr (here one per committed group: --progress-interval 0)."""
    rows = arithmetic_rows(6)
    rows[3]["question"] = ""
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    done = run_cli(
        "build", str(source), "--out", str(out), "--backend", "fake", "--group-rows", "2",
        "--progress-interval", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("progress: ")]
    assert [line.split(",")[0] for line in lines] == [
        "progress: 1/6 rows (16.7%)",
        "progress: 3/6 rows (50.0%)",
        "progress: 5/6 rows (83.3%)",
        "progress: 6/6 rows (100.0%)",
        "progress: 6/6 rows (100.0%)",
    ]
    assert all(", 1 rejected, " in line and " traces/s, " in line and " ETA " in line for line in lines)
    assert "starting: 6 rows" in done.stdout and "build summary" in done.stdout
