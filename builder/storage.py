"""Crash-safe file writes: everything is written to a hidden temporary sibling, flushed, then renamed.

A reader (or a resumed build) therefore sees a file whole or not at all. :func:`commit` is the one rename
every write goes through.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from mig_annotator.builder.errors import OutputConflictError

TMP_MARK = ".tmp-"
PARQUET_COMPRESSION = "zstd"


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def commit(tmp: Path, path: Path) -> None:
    """Atomically move a finished temporary file into place and make the rename durable."""
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = tmp_path(path)
    with tmp.open("wb") as handle:
        handle.write(data)
        _flush(handle)
    commit(tmp, path)


def write_parquet_atomic(
    tables: Iterable[pa.Table], schema: pa.Schema, path: Path, row_group_rows: int
) -> int:
    """Write ``tables`` (in order) as one zstd Parquet file with row groups of ``row_group_rows``.

    Tables are buffered until a row group fills, so memory holds about one row group. Returns the rows.
    """
    tmp = tmp_path(path)
    rows = 0
    with tmp.open("wb") as handle:
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
        _flush(handle)
    commit(tmp, path)
    return rows


def remove_stale_tmp(folders: Iterable[Path]) -> None:
    """Delete temporary files a killed writer left behind."""
    for folder in folders:
        if folder.is_dir():
            for path in folder.rglob(f".*{TMP_MARK}*"):
                path.unlink(missing_ok=True)


def remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class FolderLock:
    """An exclusive advisory lock on a file; the kernel releases it when the process dies."""

    def __init__(self, path: Path, guarded: Path) -> None:
        self._path = path
        self._guarded = guarded
        self._handle: IO[bytes] | None = None

    def acquire(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            handle.close()
            raise OutputConflictError(
                f"{self._guarded}: another build is writing this folder right now"
            ) from error
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _flush(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
