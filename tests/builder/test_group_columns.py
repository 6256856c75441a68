"""The group column: rows of one GRPO group carry its label as the trace's group_id (fake probe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mig_annotator.builder.columns import PRESETS, ColumnMapping, resolve_mapping
from mig_annotator.builder.manifest import read_manifest
from mig_annotator.builder.pipeline import run_build
from mig_annotator.builder.plan import inspect_inputs, kept_columns
from mig_annotator.builder.rows import RowProblem, map_record
from mig_annotator.builder.settings import BuildSettings
from mig_annotator.engine.annotator import Annotator
from mig_annotator.schemas import Trace
from mig_annotator.schemas.trace import MAX_GROUP_ID_CHARS
from tests.builder.conftest import FAKE_IDENTITY, FakeProbe, arithmetic_rows, make_plan, run_cli, write_jsonl

ROW = {"id": "r0", "question": "1 + 1?", "completion": "1 + 1 = 2.\nA: 2", "reference_answer": "2"}


def _group_id(record: dict[str, Any], mapping: ColumnMapping | None = None) -> str | None:
    trace = map_record(record, mapping or PRESETS["default"], 0, id_present=True)
    assert isinstance(trace, Trace), trace
    return trace.group_id


def test_the_gsm8k_preset_groups_the_shared_rollouts_by_question_id(shared_rollouts: list[dict]) -> None:
    rows = shared_rollouts[:8]
    traces = [map_record(row, PRESETS["gsm8k"], i, id_present=True) for i, row in enumerate(rows)]
    assert all(isinstance(trace, Trace) for trace in traces)
    assert [trace.group_id for trace in traces] == [row["question_id"] for row in rows]  # type: ignore[union-attr]
    assert len({row["question_id"] for row in rows}) == 2  # four rollouts per question


def test_each_preset_names_its_group_column() -> None:
    assert {name: mapping.group_id for name, mapping in PRESETS.items()} == {
        "default": "group_id",
        "verl": "uid",
        "trl": "group_id",
        "gsm8k": "question_id",
    }
    assert resolve_mapping("gsm8k", group_col="uid").group_id == "uid"
    assert resolve_mapping("gsm8k").group_id == "question_id"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("uid-1", "uid-1"),
        (7, "7"),
        (None, None),  # null: no group
        ("  ", None),  # blank: no group
    ],
)
def test_a_group_value_becomes_the_group_id(value: object, expected: str | None) -> None:
    assert _group_id(ROW | {"group_id": value}) == expected


def test_a_row_without_the_group_column_has_no_group_id_and_none_maps_none() -> None:
    assert _group_id(ROW) is None
    assert _group_id(ROW | {"group_id": "g"}, ColumnMapping(group_id=None)) is None


def test_an_overlong_group_value_is_hashed_so_equal_values_still_group() -> None:
    long_value = "q" * (MAX_GROUP_ID_CHARS + 10)
    first, second = _group_id(ROW | {"group_id": long_value}), _group_id(ROW | {"group_id": long_value})
    assert first is not None and first.startswith("sha256:") and first == second


@pytest.mark.parametrize("value", [True, 1.5, ["a"], {"k": "v"}])
def test_a_group_value_that_is_not_text_or_an_integer_rejects_the_row_naming_the_field(value: object) -> None:
    problem = map_record(ROW | {"group_id": value}, PRESETS["default"], 0, id_present=True)
    assert isinstance(problem, RowProblem)
    assert (problem.stage, problem.field) == ("mapping", "group_id")
    assert "column 'group_id': holds" in problem.reason and "expected text or an integer" in problem.reason


def test_a_missing_group_column_is_not_an_error_and_a_present_one_is_still_copied(tmp_path: Path) -> None:
    without = write_jsonl(tmp_path / "without.jsonl", [ROW])
    settings = BuildSettings(inputs=[str(without)], out=tmp_path / "o", columns=resolve_mapping("gsm8k"))
    inspect_inputs(settings)  # no question_id column: rows simply have no group id
    with_group = write_jsonl(tmp_path / "with.jsonl", arithmetic_rows(2))
    settings = BuildSettings(inputs=[str(with_group)], out=tmp_path / "o", columns=resolve_mapping("gsm8k"))
    _, schemas, _ = inspect_inputs(settings)
    assert [column.source for column in kept_columns(settings, schemas)] == [
        "question_id",
        "generator",
        "is_correct",
    ]


def test_a_build_hands_the_group_ids_to_the_engine_and_scores_as_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", arithmetic_rows(6))
    planned: list[Trace] = []
    plan = Annotator.plan

    def recording_plan(self: Annotator, traces: list[Trace], *args: Any, **kwargs: Any) -> Any:
        planned.extend(traces)
        return plan(self, traces, *args, **kwargs)

    monkeypatch.setattr(Annotator, "plan", recording_plan)
    grouped = run_build(
        make_plan(
            FAKE_IDENTITY, [source], tmp_path / "grouped", preset="gsm8k", columns=resolve_mapping("gsm8k")
        ),
        FakeProbe(),
    )
    assert sorted((trace.id, trace.group_id) for trace in planned) == [
        (f"arith-{i:03d}", f"q{i // 2}") for i in range(6)
    ]
    ungrouped_mapping = resolve_mapping("gsm8k").model_copy(update={"group_id": None})
    run_build(
        make_plan(FAKE_IDENTITY, [source], tmp_path / "ungrouped", preset="gsm8k", columns=ungrouped_mapping),
        FakeProbe(),
    )
    assert grouped.manifest.identity.columns.group_id == "question_id"
    with_groups = pl.read_parquet(tmp_path / "grouped" / "part-00000.parquet")
    without_groups = pl.read_parquet(tmp_path / "ungrouped" / "part-00000.parquet")
    assert with_groups["question_id"].to_list() == [f"q{i // 2}" for i in range(6)]  # still copied
    assert with_groups.equals(without_groups)


def test_the_cli_group_col_flag_sets_the_group_column(tmp_path: Path) -> None:
    rows = [row | {"uid": f"u-{row['question_id']}"} for row in arithmetic_rows(2)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    done = run_cli(
        "build", str(source), "--out", str(out), "--backend", "fake", "--no-progress", "--group-col", "uid"
    )
    assert done.returncode == 0, done.stderr
    manifest = read_manifest(out / "_manifest.json")
    assert manifest is not None and manifest.identity.columns.group_id == "uid"
    assert pl.read_parquet(out / "part-00000.parquet")["uid"].to_list() == ["u-q0", "u-q0"]
