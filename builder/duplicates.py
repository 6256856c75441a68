"""Rows whose id repeats an earlier row's id, found before any scoring.

The inputs are read once when the build is planned (:func:`find_duplicate_ids`), with the builder's own
reader and id rule (:func:`builder.rows.row_id`), so the answer depends on the inputs only: a resumed build,
a Ray build and a local build count the same rows. ``--on-duplicate-id`` says what happens to them: ``keep``
(the default: a warning and a count in the manifest), ``drop`` (later rows become rejects naming the first
row) or ``error`` (the build refuses to start, naming the id and both rows).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from mig_annotator.builder.columns import ColumnMapping, DuplicatePolicy
from mig_annotator.builder.errors import InputError
from mig_annotator.builder.rows import row_id
from mig_annotator.builder.sources import InputFile, SourceReader, as_written

FLAG = "--on-duplicate-id"
_SAMPLE_CHARS = 80  # a sample id is shortened to this many characters in messages


@dataclass(frozen=True)
class RowPlace:
    """Where an input row is: its global index, its file and its row in the file."""

    index: int
    file: str
    row: int

    def __str__(self) -> str:
        return f"{self.file} row {self.row}"


@dataclass(frozen=True)
class DuplicateIds:
    """What the scan found: how many rows repeat an earlier row's id, the first such row, and (for
    ``drop``) each repeating row's global index mapped to the first row with its id."""

    count: int = 0
    sample_id: str | None = None
    sample: tuple[RowPlace, RowPlace] | None = None  # (first row with the id, the first row repeating it)
    earlier: dict[int, RowPlace] = field(default_factory=dict)

    def message(self, policy: DuplicatePolicy) -> str:
        """The one-line warning (``keep``) or error (``error``) naming the count and a sample."""
        if self.count == 0 or self.sample is None:
            return "no duplicate ids"
        first, repeat = self.sample
        text = (
            f"{self.count:,} row(s) repeat an earlier row's id, e.g. id {shorten(self.sample_id or '')!r} "
            f"at {repeat} repeats {first}"
        )
        if policy == "error":
            return f"{text} ({FLAG} error); fix the ids, or use {FLAG} keep or drop"
        if policy == "drop":
            return f"{text}; the later rows are rejected ({FLAG} drop)"
        return f"{text}; all are kept ({FLAG} drop leaves the later ones out, {FLAG} error refuses)"


def shorten(text: str) -> str:
    if len(text) <= _SAMPLE_CHARS:
        return text
    return f"{text[:_SAMPLE_CHARS]}... ({len(text):,} characters)"


def find_duplicate_ids(
    files: Sequence[InputFile],
    schemas: Sequence[pl.Schema],
    mapping: ColumnMapping,
    id_present: bool,
    limit: int | None,
    policy: DuplicatePolicy,
) -> DuplicateIds:
    """Scan the inputs' ids (rows without an id, or that do not parse, are left out: they are rejects).

    Memory holds a 16-byte digest per distinct id; ``error`` raises :class:`InputError` after the scan,
    counting every repeating row.
    """
    if not id_present:
        return DuplicateIds()  # generated ids (row-<n>) never repeat
    reader = SourceReader(files, schemas, pa.schema([]), [], limit=limit, read_rows=4096)
    first_seen: dict[bytes, int] = {}  # id digest -> global index of the first row with it
    starts: list[int] = []  # each file's first global row, and its path
    paths: list[str] = []
    count = 0
    sample_id: str | None = None
    sample: tuple[RowPlace, RowPlace] | None = None
    earlier: dict[int, RowPlace] = {}
    while len(batch := reader.take(4096)):
        for local in range(len(batch)):
            if local in batch.errors:
                continue
            index = batch.start + local
            # the row as its file holds it, as the build maps it: an id 33.0 is no id (a reject), not '33'
            trace_id = row_id(as_written(batch, local), mapping, index, id_present)
            if trace_id is None:
                continue
            key = hashlib.blake2b(trace_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            if not paths or paths[-1] != batch.files[local]:
                starts.append(index - batch.file_rows[local])
                paths.append(batch.files[local])
            first_index = first_seen.setdefault(key, index)
            if first_index == index:
                continue
            count += 1
            place = RowPlace(index, batch.files[local], batch.file_rows[local])
            first = RowPlace(first_index, *_locate(starts, paths, first_index))
            if sample is None:
                sample_id, sample = trace_id, (first, place)
            if policy == "drop":
                earlier[index] = first
    found = DuplicateIds(count, sample_id, sample, earlier)
    if policy == "error" and count:
        raise InputError(found.message(policy))  # after the whole scan: the count is every repeating row
    return found


def _locate(starts: Sequence[int], files: Sequence[str], index: int) -> tuple[str, int]:
    """The file and file row of global row ``index`` (``starts``: each file's first global row; only files
    that held a row with an id are listed, which is every file a first row can lie in)."""
    position = bisect.bisect_right(starts, index) - 1
    return files[position], index - starts[position]
