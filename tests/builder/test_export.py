"""Trainer exports: the dual-gated SFT subset and TRL stepwise PRM data."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from mig_annotator.builder.errors import DatasetError
from mig_annotator.builder.export import export
from mig_annotator.builder.step_label_rules import StepLabelRule, StepLabels
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


def test_prm_export_with_the_new_max_rule_labels_positive_rewards(
    built_dataset: Path, tmp_path: Path
) -> None:
    rows = built_rows(built_dataset)
    export(built_dataset, "prm", tmp_path / "prm.jsonl", StepLabels("new-max"))
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


# trace id -> (is_correct, outcome, v_0..v_K, ProcessBench label)
PLATEAU_AND_DIP = {
    "plateau": (True, 1, [-2.0, -2.0, -2.0, -1.0], -1),  # right steps that keep v, then the answer lifts it
    "dip": (False, 0, [-2.0, -1.0, -2.0, -1.2], 1),  # up, down (the wrong step), partly back
}


def prm_labels(tmp_path: Path, rule: StepLabelRule | None = None, tau: float = 0.5) -> list[list[bool]]:
    from tests.builder.report_support import write_labelled_dataset

    dataset = tmp_path / "dataset"
    if not dataset.exists():
        write_labelled_dataset(dataset, PLATEAU_AND_DIP)
    out = tmp_path / "prm.jsonl"
    export(dataset, "prm", out, None if rule is None else StepLabels(rule, tau))
    return [json.loads(line)["labels"] for line in out.read_text().splitlines()]


def test_by_default_a_step_is_right_unless_it_lowers_the_value_by_more_than_half_a_nat(
    tmp_path: Path,
) -> None:
    # TRL's stepwise labels mean "this step is correct": steps that keep v are not wrong
    assert prm_labels(tmp_path) == [[True, True, True], [True, False, True]]  # mig_k [0, 0, 1], [1, -1, .8]
    assert prm_labels(tmp_path, "no-drop", 1.0) == [[True] * 3, [True] * 3]
    assert prm_labels(tmp_path, "no-drop", 0.0) == [[True] * 3, [True, False, True]]


def test_the_label_rules_new_max_and_no_drop_from_best(tmp_path: Path) -> None:
    # new-max: only steps that set a new best value (r_k > 0)
    assert prm_labels(tmp_path, "new-max") == [[False, False, True], [True, False, False]]
    # no-drop-from-best: v_k - W_{k-1} = [0, 0, 1] and [1, -1, -.2]
    assert prm_labels(tmp_path, "no-drop-from-best", 0.0) == [[True, True, True], [True, False, False]]
    assert prm_labels(tmp_path, "no-drop-from-best", 0.3) == [[True, True, True], [True, False, True]]


def test_cli_export_prm_takes_the_rule_and_refuses_a_negative_tau_or_an_unknown_rule(tmp_path: Path) -> None:
    from tests.builder.report_support import write_labelled_dataset

    dataset = write_labelled_dataset(tmp_path / "dataset", PLATEAU_AND_DIP)
    out = tmp_path / "p.jsonl"
    done = run_cli("export", "prm", str(dataset), "--out", str(out), "--label-rule", "new-max", "--tau", "-1")
    assert done.returncode != 0 and "--tau must be a finite number >= 0, got -1.0" in done.stderr
    done = run_cli("export", "prm", str(dataset), "--out", str(out), "--label-rule", "max")
    assert done.returncode != 0 and "--label-rule" in done.stderr
    assert not out.exists()
    done = run_cli("export", "prm", str(dataset), "--out", str(out), "--label-rule", "new-max")
    assert done.returncode == 0, done.stderr
    first = out.read_text().splitlines()[0]
    assert json.loads(first)["labels"] == [False, False, True]
