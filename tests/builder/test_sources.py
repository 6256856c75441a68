"""Input resolution, column checks and chunked reading."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from mig_annotator.builder import sources
from mig_annotator.builder.columns import ColumnMapping, resolve_mapping
from mig_annotator.builder.errors import InputError
from mig_annotator.builder.plan import inspect_inputs, kept_columns
from mig_annotator.builder.settings import BuildSettings
from mig_annotator.builder.sources import SourceReader, resolve_inputs
from tests.builder.conftest import arithmetic_rows, write_jsonl


def test_folders_and_globs_resolve_sorted_and_skip_hidden_and_underscore_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "b.jsonl", [{"x": 1}])
    write_jsonl(tmp_path / "data" / "a.jsonl", [{"x": 1}])
    write_jsonl(tmp_path / "data" / "_skip.jsonl", [{"x": 1}])
    write_jsonl(tmp_path / "data" / ".hidden" / "c.jsonl", [{"x": 1}])
    (tmp_path / "data" / "notes.txt").write_text("not data")
    pl.DataFrame({"x": [1]}).write_parquet(tmp_path / "data" / "sub" / "d.parquet", mkdir=True)
    found = [item.path.name for item in resolve_inputs([tmp_path / "data"])]
    assert found == ["a.jsonl", "b.jsonl", "d.parquet"]
    globbed = resolve_inputs([str(tmp_path / "data" / "*.jsonl")])
    assert [item.path.name for item in globbed] == ["_skip.jsonl", "a.jsonl", "b.jsonl"]
    assert {item.format for item in resolve_inputs([tmp_path / "data" / "sub" / "d.parquet"])} == {"parquet"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.jsonl", "no such file or folder"),
        ("notes.txt", "unsupported input format"),
        ("*.csv", "matches no"),
    ],
)
def test_bad_input_specs_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=message):
        resolve_inputs([spec])


def test_the_same_file_twice_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"x": 1}])
    with pytest.raises(InputError, match="more than once"):
        resolve_inputs([path, str(tmp_path / "*.jsonl")])


def test_a_missing_column_fails_naming_the_column_the_flag_and_the_columns_found(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "prompt": "q", "completion": "c", "answer": "1"}])
    settings = BuildSettings(inputs=[str(path)], out=tmp_path / "out")
    with pytest.raises(InputError) as caught:
        inspect_inputs(settings)
    message = str(caught.value)
    assert "column 'question' (--question-col" in message
    assert "columns found: id, prompt, completion, answer" in message
    assert str(path) in message


def test_a_nested_answer_column_must_exist_inside_its_struct(tmp_path: Path) -> None:
    row = {"prompt": "q", "response": "r", "reward_model": {"style": "rule"}}
    path = write_jsonl(tmp_path / "a.jsonl", [row])
    settings = BuildSettings(inputs=[str(path)], out=tmp_path / "o", columns=resolve_mapping("verl"))
    with pytest.raises(InputError, match=r"'reward_model\.ground_truth'"):
        inspect_inputs(settings)


def test_ids_are_generated_when_the_default_id_column_is_absent_but_required_when_named(
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"question": "q", "completion": "c", "reference_answer": "1"}])
    _, _, id_present = inspect_inputs(BuildSettings(inputs=[str(path)], out=tmp_path / "o"))
    assert id_present is False
    named = BuildSettings(inputs=[str(path)], out=tmp_path / "o", columns=resolve_mapping(id_col="uid"))
    with pytest.raises(InputError, match="'uid' \\(--id-col"):
        inspect_inputs(named)


def test_chunked_reading_across_formats_gives_every_row_once_in_order(tmp_path: Path) -> None:
    rows = arithmetic_rows(23)
    write_jsonl(tmp_path / "in" / "a.jsonl", rows[:7])
    with gzip.open(tmp_path / "in" / "b.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows[7:15])
    pl.DataFrame(rows[15:]).write_parquet(tmp_path / "in" / "c.parquet")
    settings = BuildSettings(inputs=[str(tmp_path / "in")], out=tmp_path / "out")
    files, schemas, _ = inspect_inputs(settings)
    kept = kept_columns(settings, schemas)
    assert [column.source for column in kept] == ["question_id", "generator", "is_correct"]
    reader = SourceReader(
        files, schemas, pa.schema([c.field for c in kept]), [c.source for c in kept], limit=20, read_rows=3
    )
    batches = [reader.take(6) for _ in range(5)]
    assert [len(batch) for batch in batches] == [6, 6, 6, 2, 0]
    records = [record for batch in batches for record in batch.records]
    assert [record["id"] for record in records] == [row["id"] for row in rows[:20]]
    assert batches[1].start == 6
    assert batches[1].files[0].endswith("a.jsonl") and batches[1].files[1].endswith("b.jsonl.gz")
    assert batches[1].file_rows[:2] == [6, 0]
    kept_table = pa.concat_tables([batch.kept for batch in batches])
    assert kept_table.column("is_correct").to_pylist() == [row["is_correct"] for row in rows[:20]]
    assert kept_table.schema.field("generator").type == pa.string()


def test_kept_columns_that_clash_with_dataset_columns_are_renamed(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [{"question": "q", "completion": "c", "reference_answer": "1", "outcome": "won", "steps": [1]}],
    )
    settings = BuildSettings(inputs=[str(path)], out=tmp_path / "o")
    _, schemas, _ = inspect_inputs(settings)
    kept = kept_columns(settings, schemas)
    assert [(c.source, c.field.name) for c in kept] == [
        ("outcome", "input_outcome"),
        ("steps", "input_steps"),
    ]


def test_explicit_keep_columns_must_exist(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"question": "q", "completion": "c", "reference_answer": "1"}])
    settings = BuildSettings(inputs=[str(path)], out=tmp_path / "o", keep_columns=["nope"])
    _, schemas, _ = inspect_inputs(settings)
    with pytest.raises(InputError, match="'nope' not in any input"):
        kept_columns(settings, schemas)


def test_the_mapping_needs_exactly_one_reasoning_column() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ColumnMapping(completion=None, steps=None)
    with pytest.raises(ValueError, match="not both"):
        resolve_mapping(completion_col="c", steps_col="s")
    assert resolve_mapping("trl", steps_col="steps").completion is None


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_row_over_the_byte_limit_is_never_held_and_becomes_a_reject_naming_file_line_and_limit(
    tmp_path: Path, suffix: str
) -> None:
    """A 10 MB line peaked at 1.67 GB before its rejection: the reader holds at most the limit of a line."""
    rows = arithmetic_rows(3, seed=4)
    huge = json.dumps(rows[1] | {"completion": "x" * 200_000})
    text = json.dumps(rows[0]) + "\n\n" + huge + "\n" + json.dumps(rows[2]) + "\n"
    path = tmp_path / f"in{suffix}"
    if suffix == ".jsonl.gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    settings = BuildSettings(inputs=[str(path)], out=tmp_path / "out", max_row_bytes=4096)
    files, schemas, _ = inspect_inputs(settings)
    assert files[0].max_row_bytes == 4096

    batch = SourceReader(files, schemas, pa.schema([]), []).take(10)
    assert len(batch) == 3 and batch.file_rows == [0, 1, 2]
    assert [record["id"] for record in batch.records] == [rows[0]["id"], None, rows[2]["id"]]
    assert batch.errors == {
        1: f"{files[0].path} line 3: {len(huge):,} bytes, over the limit of 4,096 bytes per row "
        "(max_row_bytes, --max-row-bytes); the row was not read"
    }
    raw = batch.raw[1]
    assert raw is not None and raw.endswith(" [...]") and len(raw) == 512 + len(" [...]")


def test_the_reader_never_asks_for_more_than_the_row_limit_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound itself: every read of a line asks for at most the limit + 1 bytes, however long it is."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "a", "completion": "y" * 3_000_000}) + "\n", encoding="utf-8")
    asked: list[int] = []

    class Counting(io.BufferedReader):
        def readline(self, size: int | None = -1, /) -> bytes:
            asked.append(-1 if size is None else size)
            return super().readline(size)

    monkeypatch.setattr(sources, "_open_lines", lambda source: Counting(io.FileIO(source.path)))
    [source] = resolve_inputs([path], max_row_bytes=8192)
    [line] = list(sources._records(source))
    assert isinstance(line, sources.OversizedLine) and line.size == path.stat().st_size - 1
    assert asked and all(0 < size <= 2**20 for size in asked) and asked[0] == 8193
