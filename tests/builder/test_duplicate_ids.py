"""Rows whose id repeats an earlier row's id: counted in the manifest and warned about (keep), rejected
naming the first row (drop), or refused before any work (error); the same after a resume and on Ray."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mig_annotator.builder.errors import InputError
from mig_annotator.builder.layout import OutputLayout
from mig_annotator.builder.pipeline import run_build
from mig_annotator.builder.ray_engine import WindowScorer, read_shard_windows
from mig_annotator.engine import atomic_files
from tests.builder.conftest import FAKE_IDENTITY, FakeProbe, arithmetic_rows, make_plan, run_cli, write_jsonl
from tests.builder.ray_support import FakeProbeFactory
from tests.builder.test_resume import SimulatedCrash, assert_same_output, output_state


def repeated_inputs(tmp_path: Path) -> Path:
    """Ten rows; rows 4 and 7 repeat row 1's id, row 9 repeats row 3's (an integer id equal as text)."""
    rows: list[dict[str, Any]] = arithmetic_rows(10, seed=5)
    rows[4]["id"] = rows[7]["id"] = rows[1]["id"]
    rows[3]["id"], rows[9]["id"] = 33, "33"
    return write_jsonl(tmp_path / "in.jsonl", rows)


def plan_for(source: Path, out: Path, policy: str = "keep", **settings: Any):
    layout = {"shard_rows": 4, "window_rows": 2, "group_rows": 1} | settings
    return make_plan(FAKE_IDENTITY, [source], out, on_duplicate_id=policy, **layout)


def test_repeated_ids_are_kept_and_counted_in_the_manifest(tmp_path: Path) -> None:
    source = repeated_inputs(tmp_path)
    plan = plan_for(source, tmp_path / "out")
    assert plan.duplicates.count == 3
    assert plan.duplicates.sample_id == "arith-001"
    first, repeat = plan.duplicates.sample or ()
    assert (first.row, repeat.row) == (1, 4)
    message = plan.duplicates.message("keep")
    assert "3 row(s) repeat" in message and "'arith-001'" in message
    assert f"{source} row 4 repeats {source} row 1" in message

    manifest = run_build(plan, FakeProbe()).manifest
    assert manifest.counts is not None
    assert (manifest.counts.duplicate_ids, manifest.counts.annotated, manifest.counts.rejected) == (3, 10, 0)
    assert manifest.identity.on_duplicate_id == "keep"


def test_drop_rejects_the_later_rows_naming_the_first_row(tmp_path: Path) -> None:
    source = repeated_inputs(tmp_path)
    out = tmp_path / "out"
    manifest = run_build(plan_for(source, out, "drop"), FakeProbe()).manifest
    assert manifest.counts is not None
    assert (manifest.counts.duplicate_ids, manifest.counts.annotated, manifest.counts.rejected) == (3, 7, 3)
    rejects = pq.read_table(OutputLayout(out).rejects).to_pylist()
    assert [(r["source_row"], r["trace_id"], r["field"], r["stage"]) for r in rejects] == [
        (4, "arith-001", "id", "mapping"),
        (7, "arith-001", "id", "mapping"),
        (9, "33", "id", "mapping"),
    ]
    assert rejects[2]["reason"] == f"id '33' repeats the id of {source} row 3 (--on-duplicate-id drop)"
    ids = [
        row
        for part in OutputLayout(out).parts()
        for row in pq.read_table(part).column("trace_id").to_pylist()
    ]
    assert len(ids) == len(set(ids)) == 7


def test_error_refuses_before_any_work_naming_the_id_and_both_rows(tmp_path: Path) -> None:
    """The count is every repeating row (it said 1 when 3 repeat), the sample the first repeat."""
    source = repeated_inputs(tmp_path)
    with pytest.raises(InputError) as raised:
        plan_for(source, tmp_path / "out", "error")
    assert str(raised.value) == (
        f"3 row(s) repeat an earlier row's id, e.g. id 'arith-001' at {source} row 4 repeats {source} row 1 "
        "(--on-duplicate-id error); fix the ids, or use --on-duplicate-id keep or drop"
    )
    assert not (tmp_path / "out").exists()


def test_a_float_id_is_a_rejected_id_never_a_duplicate_of_the_text_it_reads_as(tmp_path: Path) -> None:
    """The scan read ids with the file's inferred column types: 33.0 became '33' and was dropped as a
    duplicate of row 0's '33', with a reason calling its id ''."""
    rows: list[dict[str, Any]] = arithmetic_rows(3, seed=2)
    rows[0]["id"], rows[1]["id"] = "33", 33.0
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    plan = plan_for(source, tmp_path / "out", "drop")
    assert plan.duplicates.count == 0
    manifest = run_build(plan, FakeProbe()).manifest
    assert manifest.counts is not None and (manifest.counts.annotated, manifest.counts.rejected) == (2, 1)
    [reject] = pq.read_table(OutputLayout(tmp_path / "out").rejects).to_pylist()
    assert (reject["source_row"], reject["field"], reject["trace_id"]) == (1, "id", None)
    assert reject["reason"] == "column 'id' holds float, expected text or an integer"


def test_ids_repeated_across_files_and_generated_ids_are_handled(tmp_path: Path) -> None:
    rows = arithmetic_rows(4, seed=1)
    first = write_jsonl(tmp_path / "a.jsonl", rows[:2])
    second = write_jsonl(tmp_path / "b.jsonl", [rows[2], dict(rows[3], id=rows[0]["id"])])
    plan = make_plan(FAKE_IDENTITY, [first, second], tmp_path / "out")
    assert plan.duplicates.count == 1
    assert plan.duplicates.message("keep").startswith(
        f"1 row(s) repeat an earlier row's id, e.g. id 'arith-000' at {second} row 1 repeats {first} row 0"
    )
    no_ids = write_jsonl(tmp_path / "c.jsonl", [{k: v for k, v in row.items() if k != "id"} for row in rows])
    assert make_plan(FAKE_IDENTITY, [no_ids], tmp_path / "generated").duplicates.count == 0


def test_a_build_crashed_midway_then_resumed_counts_and_drops_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = repeated_inputs(tmp_path)
    run_build(plan_for(source, tmp_path / "reference", "drop"), FakeProbe())
    expected = output_state(tmp_path / "reference")
    real_replace = os.replace
    calls = 0

    def crashing_replace(src: Any, dst: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 9:
            raise SimulatedCrash
        real_replace(src, dst)

    monkeypatch.setattr(atomic_files.os, "replace", crashing_replace)
    with pytest.raises(SimulatedCrash):
        run_build(plan_for(source, tmp_path / "out", "drop"), FakeProbe())
    monkeypatch.setattr(atomic_files.os, "replace", real_replace)
    assert (tmp_path / "out" / "_work").is_dir()
    result = run_build(plan_for(source, tmp_path / "out", "drop"), FakeProbe())
    assert result.resumed_rows > 0
    assert_same_output(output_state(tmp_path / "out"), expected)
    assert result.manifest.counts is not None and result.manifest.counts.duplicate_ids == 3


def test_a_build_planned_with_another_policy_is_not_continued(tmp_path: Path) -> None:
    source = repeated_inputs(tmp_path)
    run_build(plan_for(source, tmp_path / "out", "keep"), FakeProbe())
    from mig_annotator.builder.errors import OutputConflictError
    from mig_annotator.builder.pipeline import claim_output

    with pytest.raises(OutputConflictError, match="on_duplicate_id"):
        claim_output(plan_for(source, tmp_path / "out", "drop"))


def test_the_ray_engine_scorer_rejects_the_same_rows_as_the_local_engine(tmp_path: Path) -> None:
    source = repeated_inputs(tmp_path)
    out = tmp_path / "local"
    run_build(plan_for(source, out, "drop"), FakeProbe())
    local = pq.read_table(OutputLayout(out).rejects).to_pylist()
    plan = plan_for(source, tmp_path / "ray", "drop")
    scorer = WindowScorer(plan, FakeProbeFactory())  # the actor's code, called without a cluster
    ray_rejects = []
    for shard in plan.shards:
        for block in read_shard_windows(plan, shard, list(shard.windows)):
            for payload in scorer(block).column("result").to_pylist():
                ray_rejects.extend(pickle.loads(payload).rejects)
    keys = ("source_row", "trace_id", "field", "reason")
    assert [tuple(r[k] for k in keys) for r in ray_rejects] == [tuple(r[k] for k in keys) for r in local]


def test_the_cli_warns_once_with_the_count_and_refuses_with_error(tmp_path: Path) -> None:
    source = repeated_inputs(tmp_path)
    refused = run_cli("build", str(source), "--out", str(tmp_path / "refused"), "--on-duplicate-id", "error")
    assert refused.returncode == 2, refused.stderr
    assert "id 'arith-001'" in refused.stderr and "(--on-duplicate-id error)" in refused.stderr
    kept = run_cli("build", str(source), "--out", str(tmp_path / "kept"), "--limit", "5", "--no-progress")
    assert kept.returncode == 0, kept.stderr
    assert kept.stderr.count("warning: 1 row(s) repeat an earlier row's id, e.g. id 'arith-001'") == 1
