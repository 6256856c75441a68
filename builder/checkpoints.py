"""The files a build keeps in ``_work/`` while it runs: committed groups, rejects and completion markers.

Every write is atomic (:mod:`builder.storage`), and a group's rows file is written last, so a group counts
as committed exactly when its rows file exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mig_annotator.builder.annotate import GLOBAL_ROW
from mig_annotator.builder.layout import OutputLayout
from mig_annotator.builder.plan import ShardPlan, WindowPlan
from mig_annotator.builder.storage import write_bytes_atomic, write_parquet_atomic
from mig_annotator.schemas.arrow import REJECT_SCHEMA

STATS_KEY = b"mig.stats"
_GLOBAL_FIELD = pa.field(GLOBAL_ROW, pa.int64(), nullable=False)
WORK_REJECT_SCHEMA = REJECT_SCHEMA.append(_GLOBAL_FIELD)
_ONE_GROUP = 1 << 30  # checkpoint files are small: one row group


def work_rows_schema(output_schema: pa.Schema) -> pa.Schema:
    return output_schema.append(_GLOBAL_FIELD)


def write_group(
    layout: OutputLayout,
    shard: int,
    window: int,
    group: int,
    rows: pa.Table,
    rejects: list[dict[str, Any]],
    stats: dict[str, float],
    rows_schema: pa.Schema,
) -> None:
    """Commit one scored group: its rejects first, then its rows (the commit point)."""
    layout.window_dir(shard, window).mkdir(parents=True, exist_ok=True)
    if rejects:
        write_rejects(layout.group_rejects(shard, window, group), rejects)
    schema = rows_schema.with_metadata({STATS_KEY: json.dumps(stats).encode()})
    write_parquet_atomic([rows.cast(schema)], schema, layout.group_rows(shard, window, group), _ONE_GROUP)


def write_rejects(path: Path, rejects: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rejects, schema=WORK_REJECT_SCHEMA)
    write_parquet_atomic([table], WORK_REJECT_SCHEMA, path, _ONE_GROUP)


def group_files(layout: OutputLayout, shard: int, window: int) -> list[Path]:
    folder = layout.window_dir(shard, window)
    return sorted(folder.glob("group-[0-9][0-9][0-9][0-9].parquet")) if folder.is_dir() else []


def is_group_committed(layout: OutputLayout, shard: int, window: int, group: int) -> bool:
    return layout.group_rows(shard, window, group).is_file()


def group_stats(path: Path) -> dict[str, float]:
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(STATS_KEY, b"{}"))


def parquet_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows if path.is_file() else 0


def write_marker(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(content, sort_keys=True) + "\n").encode())


def read_marker(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def committed_rows(layout: OutputLayout, shard: ShardPlan) -> int:
    """Input rows of the shard already accounted for (annotated or rejected) in committed files."""
    if read_marker(layout.shard_done(shard.index)) is not None and layout.part(shard.index).is_file():
        return shard.rows
    return sum(_window_committed_rows(layout, shard.index, window) for window in shard.windows)


def _window_committed_rows(layout: OutputLayout, shard: int, window: WindowPlan) -> int:
    if layout.window_done(shard, window.index).is_file():
        return window.rows
    total = parquet_rows(layout.window_rejects(shard, window.index))
    for rows_file in group_files(layout, shard, window.index):
        total += parquet_rows(rows_file)
        total += parquet_rows(rows_file.with_name(rows_file.stem + ".rejects.parquet"))
    return total


def sorted_window_rows(layout: OutputLayout, shard: int, window: int, schema: pa.Schema) -> pa.Table:
    """The window's committed rows in input order, without the global row column."""
    tables = [pq.read_table(path) for path in group_files(layout, shard, window)]
    if not tables:
        return schema.empty_table()
    merged = pa.concat_tables(tables).sort_by(GLOBAL_ROW).drop_columns([GLOBAL_ROW])
    return merged.replace_schema_metadata(None).cast(schema)


def shard_reject_files(layout: OutputLayout, shard: ShardPlan) -> list[Path]:
    files: list[Path] = []
    for window in shard.windows:
        files.append(layout.window_rejects(shard.index, window.index))
        folder = layout.window_dir(shard.index, window.index)
        if folder.is_dir():
            files.extend(sorted(folder.glob("group-[0-9][0-9][0-9][0-9].rejects.parquet")))
    return [path for path in files if path.is_file()]


def read_rejects(paths: list[Path]) -> pa.Table:
    tables = [pq.read_table(path, schema=WORK_REJECT_SCHEMA) for path in paths]
    if not tables:
        return WORK_REJECT_SCHEMA.empty_table()
    return pa.concat_tables(tables).sort_by(GLOBAL_ROW)
