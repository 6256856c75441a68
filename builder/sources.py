"""Input files: resolve paths, folders and globs; fingerprint them; read their rows lazily, in chunks.

Rows are numbered globally in input order (files in the order given, folders and globs sorted, rows in
file order), so a build is deterministic and a row's place never depends on how the reading was chunked.
"""

from __future__ import annotations

import glob
import hashlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from builder.errors import InputError

InputFormat = Literal["jsonl", "jsonl.gz", "parquet"]
SUFFIXES: dict[str, InputFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonl.gz": "jsonl.gz",
    ".ndjson.gz": "jsonl.gz",
    ".parquet": "parquet",
}
#: JSONL column types are inferred from this many leading rows.
JSONL_INFER_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class InputFile:
    path: Path
    format: InputFormat


def input_format(path: Path) -> InputFormat | None:
    name = path.name.lower()
    for suffix, fmt in sorted(SUFFIXES.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return fmt
    return None


def resolve_inputs(specs: Sequence[str | Path]) -> list[InputFile]:
    """Files for the given files, folders (searched recursively) and glob patterns, in a fixed order.

    Folder and glob matches are sorted; names starting with ``_`` or ``.`` inside folders are skipped.
    """
    if not specs:
        raise InputError("no input given")
    found: list[InputFile] = []
    for spec in specs:
        text = str(spec)
        if glob.has_magic(text):
            paths = sorted(Path(match) for match in glob.glob(text, recursive=True))
            files = [path for path in paths if path.is_file() and input_format(path)]
            if not files:
                raise InputError(f"{text}: the pattern matches no .jsonl, .jsonl.gz or .parquet file")
        elif Path(text).is_dir():
            root = Path(text)
            files = sorted(
                path
                for path in root.rglob("*")
                if path.is_file()
                and input_format(path)
                and not any(part.startswith(("_", ".")) for part in path.relative_to(root).parts)
            )
            if not files:
                raise InputError(f"{text}: the folder holds no .jsonl, .jsonl.gz or .parquet file")
        elif Path(text).is_file():
            if input_format(Path(text)) is None:
                raise InputError(f"{text}: unsupported input format (use .jsonl, .jsonl.gz or .parquet)")
            files = [Path(text)]
        else:
            raise InputError(f"{text}: no such file or folder")
        found.extend(InputFile(path.resolve(), input_format(path)) for path in files)  # type: ignore[arg-type]
    seen: set[Path] = set()
    for item in found:
        if item.path in seen:
            raise InputError(f"{item.path}: given more than once")
        seen.add(item.path)
    return found


def scan(source: InputFile) -> pl.LazyFrame:
    if source.format == "parquet":
        return pl.scan_parquet(source.path)
    return pl.scan_ndjson(source.path, infer_schema_length=JSONL_INFER_ROWS)


def read_schema(source: InputFile) -> pl.Schema:
    try:
        return scan(source).collect_schema()
    except Exception as error:  # polars raises many kinds for unreadable files
        raise InputError(f"{source.path}: cannot read ({error})") from error


def count_rows(source: InputFile) -> int:
    try:
        return int(scan(source).select(pl.len()).collect().item())
    except Exception as error:
        raise InputError(f"{source.path}: cannot read ({error})") from error


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def column_dtype(schema: pl.Schema, column: str) -> pl.DataType | None:
    """The type of ``column``, a top-level name or a dotted path into struct columns; None if absent."""
    if column in schema:
        return schema[column]
    head, *rest = column.split(".")
    dtype: Any = schema.get(head)
    for name in rest:
        if not isinstance(dtype, pl.Struct):
            return None
        fields = {field.name: field.dtype for field in dtype.fields}
        if name not in fields:
            return None
        dtype = fields[name]
    return dtype


def lookup(record: dict[str, Any], column: str) -> Any:
    """A row's value for ``column`` (a name or a dotted struct path); None when absent."""
    if column in record:
        return record[column]
    value: Any = record
    for name in column.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def arrow_type_of(dtype: pl.DataType) -> pa.DataType:
    """The Arrow type a polars column is written as (plain, not large, strings and lists)."""
    if isinstance(dtype, pl.Null):
        return pa.string()
    converted = pl.DataFrame(schema={"column": dtype}).to_arrow(compat_level=pl.CompatLevel.oldest())
    return _plain(converted.schema.field("column").type)


def _plain(data_type: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return pa.string()
    if pa.types.is_large_binary(data_type) or pa.types.is_binary_view(data_type):
        return pa.binary()
    if pa.types.is_large_list(data_type) or pa.types.is_list(data_type) or pa.types.is_list_view(data_type):
        item = data_type.value_field
        return pa.list_(pa.field("element", _plain(item.type), nullable=True))
    if pa.types.is_struct(data_type):
        return pa.struct([pa.field(f.name, _plain(f.type), nullable=True) for f in data_type])
    return data_type


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """Consecutive input rows: the raw records, where each came from, and the kept columns (Arrow)."""

    start: int  # global index of the first row
    files: list[str]
    file_rows: list[int]
    records: list[dict[str, Any]]
    kept: pa.Table

    def __len__(self) -> int:
        return len(self.records)


class SourceReader:
    """Reads the inputs in order, a slice at a time; memory holds one polars batch and the current take."""

    def __init__(
        self,
        files: Sequence[InputFile],
        kept_schema: pa.Schema,
        kept_sources: Sequence[str],
        *,
        limit: int | None = None,
        read_rows: int = 1024,
    ) -> None:
        self._kept_schema = kept_schema
        self._kept_sources = list(kept_sources)
        self._limit = limit
        self._read_rows = read_rows
        self._batches = self._iter_batches(files)
        self._pending: deque[tuple[InputFile, int, pl.DataFrame]] = deque()
        self._next_index = 0

    def take(self, n: int) -> SourceBatch:
        """The next ``n`` rows (fewer at the end of the input or the limit)."""
        if self._limit is not None:
            n = max(0, min(n, self._limit - self._next_index))
        parts: list[tuple[InputFile, int, pl.DataFrame]] = []
        wanted = n
        while wanted > 0:
            if not self._pending:
                batch = next(self._batches, None)
                if batch is None:
                    break
                self._pending.append(batch)
            source, offset, frame = self._pending.popleft()
            if frame.height > wanted:
                self._pending.appendleft((source, offset + wanted, frame.slice(wanted)))
                frame = frame.slice(0, wanted)
            parts.append((source, offset, frame))
            wanted -= frame.height
        return self._assemble(parts)

    def _assemble(self, parts: list[tuple[InputFile, int, pl.DataFrame]]) -> SourceBatch:
        files: list[str] = []
        file_rows: list[int] = []
        records: list[dict[str, Any]] = []
        tables: list[pa.Table] = []
        for source, offset, frame in parts:
            files.extend([str(source.path)] * frame.height)
            file_rows.extend(range(offset, offset + frame.height))
            records.extend(frame.to_dicts())
            tables.append(self._kept_table(source, frame))
        kept = pa.concat_tables(tables) if tables else self._kept_schema.empty_table()
        batch = SourceBatch(self._next_index, files, file_rows, records, kept)
        self._next_index += len(records)
        return batch

    def _kept_table(self, source: InputFile, frame: pl.DataFrame) -> pa.Table:
        columns = []
        for field, name in zip(self._kept_schema, self._kept_sources, strict=True):
            if name in frame.columns:
                column = frame.get_column(name).to_arrow(compat_level=pl.CompatLevel.oldest())
                try:
                    columns.append(column.cast(field.type))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                    raise InputError(
                        f"{source.path}: column {name!r} has type {column.type}, which does not "
                        f"convert to {field.type} (its type in the first file that has it): {error}; "
                        "leave it out with --keep-cols"
                    ) from error
            else:
                columns.append(pa.nulls(frame.height, field.type))
        return pa.Table.from_arrays(columns, schema=self._kept_schema)

    def _iter_batches(self, files: Sequence[InputFile]) -> Iterator[tuple[InputFile, int, pl.DataFrame]]:
        for source in files:
            offset = 0
            try:
                for frame in scan(source).collect_batches(chunk_size=self._read_rows):
                    if frame.height:
                        yield source, offset, frame
                        offset += frame.height
            except Exception as error:
                raise InputError(f"{source.path}: cannot read near row {offset} ({error})") from error
