"""The builder's files: zstd Parquet written crash-safely, and the lock on an output folder.

The atomic-write and lock primitives are :mod:`mig_annotator.engine.atomic_files` (shared with the audit log);
they are re-exported here for the builder's modules. A reader (or a resumed build) sees a file whole or not
at all.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mig_annotator.builder.errors import OutputConflictError
from mig_annotator.engine.atomic_files import (
    FileLock,
    LockHeld,
    atomic_writer,
    commit,
    remove_stale_tmp,
    tmp_path,
    write_bytes_atomic,
)

__all__ = [
    "PARQUET_COMPRESSION",
    "FolderLock",
    "commit",
    "remove_stale_tmp",
    "remove_tree",
    "tmp_path",
    "write_bytes_atomic",
    "write_parquet_atomic",
]

PARQUET_COMPRESSION = "zstd"


def write_parquet_atomic(
    tables: Iterable[pa.Table], schema: pa.Schema, path: Path, row_group_rows: int
) -> int:
    """Write ``tables`` (in order) as one zstd Parquet file with row groups of ``row_group_rows``.

    Tables are buffered until a row group fills, so memory holds about one row group. Returns the rows.
    """
    rows = 0
    with atomic_writer(path) as handle:
        writer = pq.ParquetWriter(handle, schema, compression=PARQUET_COMPRESSION)
        buffer: list[pa.Table] = []
        buffered = 0
        for table in tables:
            buffer.append(table)
            buffered += table.num_rows
            while buffered >= row_group_rows:
                merged = pa.concat_tables(buffer)
                writer.write_table(merged.slice(0, row_group_rows), row_group_size=row_group_rows)
                rest = merged.slice(row_group_rows)
                buffer, buffered = [rest], rest.num_rows
                rows += row_group_rows
        if buffered or rows == 0:
            writer.write_table(pa.concat_tables(buffer) if buffer else schema.empty_table())
            rows += buffered
        writer.close()
    return rows


def remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class FolderLock(FileLock):
    """The build's lock on its output folder: a second build of the same folder is refused while one runs."""

    def __init__(self, path: Path, guarded: Path) -> None:
        super().__init__(path)
        self._guarded = guarded

    def acquire(self) -> None:
        try:
            super().acquire()
        except LockHeld as error:
            raise OutputConflictError(
                f"{self._guarded}: another build is writing this folder right now"
            ) from error
