"""Trainer exports: the dual-gated SFT subset and TRL stepwise PRM data."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from mig_annotator.builder.errors import DatasetError
from mig_annotator.builder.export import export
from tests.builder.conftest import run_cli


def built_rows(dataset: Path) -> list[dict]:
    return pl.read_parquet(sorted(dataset.glob("part-*.parquet"))).to_dicts()


def test_sft_export_keeps_exactly_the_dual_gated_rows_in_order(built_dataset: Path, tmp_path: Path) -> None:
    rows = built_rows(built_dataset)
    gated = [row for row in rows if row["outcome"] == 1 and row["process_reward"] > 0]
    assert [row["sft_gate"] for row in rows] == [row in gated for row in rows]
    result = export(built_dataset, "sft", tmp_path / "sft.parquet")
    exported = pl.read_parquet(tmp_path / "sft.parquet").to_dicts()
    assert exported == [{"prompt": row["question"], "completion": row["completion"]} for row in gated]
    assert (result.rows, result.source_rows) == (len(gated), len(rows))


def test_prm_export_is_trl_stepwise_with_labels_from_positive_rewards(
    built_dataset: Path, tmp_path: Path
) -> None:
    rows = built_rows(built_dataset)
    export(built_dataset, "prm", tmp_path / "prm.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "prm.jsonl").read_text().splitlines()]
    expected = [
        {
            "prompt": row["question"],
            "completions": [step["text"] for step in row["steps"]],
            "labels": [step["reward"] > 0 for step in row["steps"]],
        }
        for row in rows
        if row["steps"]
    ]
    assert lines == expected
    assert any(any(item["labels"]) for item in lines) and any(not all(item["labels"]) for item in lines)


def test_exports_refuse_unfinished_builds_and_unknown_formats(built_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"name it \.parquet or \.jsonl"):
        export(built_dataset, "sft", tmp_path / "out.csv")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "_manifest.json").write_text("{}")
    with pytest.raises(DatasetError, match="has not finished"):
        export(unfinished, "prm", tmp_path / "prm.parquet")
    with pytest.raises(DatasetError, match="not a built dataset"):
        export(tmp_path, "sft", tmp_path / "sft.parquet")


def test_cli_export_writes_the_file_and_reports_the_count(built_dataset: Path, tmp_path: Path) -> None:
    done = run_cli("export", "sft", str(built_dataset), "--out", str(tmp_path / "sft.jsonl"))
    assert done.returncode == 0, done.stderr
    gated = sum(row["sft_gate"] for row in built_rows(built_dataset))
    assert f"{gated:,} of 8 rows (sft)" in done.stdout
    assert len((tmp_path / "sft.jsonl").read_text().splitlines()) == gated
