"""The Ray engine's read side without a cluster: each shard's read task yields exactly the rows a local
build's sequential reader gives its windows, across files of every format and shards that span files."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import polars as pl
import pytest

from mig_annotator.builder.plan import BuildPlan
from mig_annotator.builder.ray_engine import read_shard_windows
from mig_annotator.builder.sources import SourceBatch, SourceReader
from tests.builder.conftest import FAKE_IDENTITY, arithmetic_rows, make_plan, write_jsonl


def three_inputs(folder: Path) -> list[Path]:
    """Seven JSONL rows (one that does not parse), six JSONL.gz rows and five Parquet rows."""
    rows = arithmetic_rows(18, seed=7)
    first = write_jsonl(folder / "a.jsonl", rows[:7])
    lines = first.read_text().splitlines()
    lines[3] = '{"id": "broken", "question": '
    first.write_text("\n".join(lines) + "\n")
    second = folder / "b.jsonl.gz"
    with gzip.open(second, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows[7:13])
    third = folder / "c.parquet"
    pl.DataFrame(rows[13:]).write_parquet(third)
    return [first, second, third]


def sequential_windows(plan: BuildPlan) -> dict[tuple[int, int], SourceBatch]:
    reader = SourceReader(
        plan.files, plan.schemas, plan.kept_schema, [c.source for c in plan.kept], limit=plan.settings.limit
    )
    return {(s.index, w.index): reader.take(w.rows) for s in plan.shards for w in s.windows}


def same_batch(got: SourceBatch, want: SourceBatch) -> None:
    assert got.start == want.start
    assert got.files == want.files
    assert got.file_rows == want.file_rows
    assert got.records == want.records
    assert got.raw == want.raw
    assert got.errors == want.errors
    assert got.kept.equals(want.kept)


@pytest.mark.parametrize(("shard_rows", "window_rows", "limit"), [(5, 2, None), (4, 4, None), (6, 3, 16)])
def test_each_shard_read_alone_gives_the_rows_the_sequential_reader_gives(
    tmp_path: Path, shard_rows: int, window_rows: int, limit: int | None
) -> None:
    inputs = three_inputs(tmp_path)
    plan = make_plan(
        FAKE_IDENTITY, inputs, tmp_path / "out", shard_rows=shard_rows, window_rows=window_rows, limit=limit
    )
    expected = sequential_windows(plan)
    seen = 0
    for shard in plan.shards:
        for block in read_shard_windows(plan, shard, list(shard.windows)):
            payload = pickle.loads(block.column("payload")[0].as_py())
            same_batch(payload.batch, expected[(payload.shard, payload.window)])
            assert block.column("rows")[0].as_py() == len(payload.batch)
            seen += len(payload.batch)
    assert seen == plan.total_rows == (limit or 18)
    assert any(batch.errors for batch in expected.values())  # the broken line is among them


def test_a_shard_read_yields_only_the_windows_asked_for(tmp_path: Path) -> None:
    plan = make_plan(FAKE_IDENTITY, three_inputs(tmp_path), tmp_path / "out", shard_rows=9, window_rows=3)
    shard = plan.shards[1]  # rows 9..17: spans the .jsonl.gz and the Parquet file
    blocks = list(read_shard_windows(plan, shard, [shard.windows[0], shard.windows[2]]))
    windows = [pickle.loads(block.column("payload")[0].as_py()).window for block in blocks]
    assert windows == [0, 2]
    expected = sequential_windows(plan)
    last = pickle.loads(blocks[1].column("payload")[0].as_py()).batch
    same_batch(last, expected[(1, 2)])
    assert last.files == [str(tmp_path / "c.parquet")] * 3
