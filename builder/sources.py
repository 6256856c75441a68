"""Input files: resolve paths, folders and globs; fingerprint them; read their rows lazily, in chunks.

Rows are numbered globally in input order (files in the order given, folders and globs sorted, rows in
file order), so a build is deterministic and a row's place never depends on how the reading was chunked.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import itertools
import json
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mig_annotator.builder.columns import lookup
from mig_annotator.builder.errors import InputError
from mig_annotator.builder.settings import DEFAULT_MAX_ROW_BYTES
from mig_annotator.schemas.trace_fields import FieldProblem
from mig_annotator.schemas.trace_images import DEFAULT_IMAGE_LIMITS, read_image_file

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


#: The default bound on one JSONL row's bytes (``BuildSettings.max_row_bytes``).
_SKIP_BYTES = 2**20  # an over-long line is skipped this many bytes at a time
_HEAD_BYTES = 512  # what a reject keeps of an over-long line


@dataclass(frozen=True, slots=True)
class InputFile:
    path: Path
    format: InputFormat
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES  # a longer JSONL line is a reject, never read whole


@dataclass(frozen=True, slots=True)
class OversizedLine:
    """A JSONL line over the row limit: where it is, how long it is, and its first bytes (it is not kept)."""

    line: int  # 1-based line number in the file
    size: int  # bytes, without the line break
    head: bytes

    def reason(self, source: InputFile) -> str:
        return (
            f"{source.path} line {self.line}: {self.size:,} bytes, over the limit of "
            f"{source.max_row_bytes:,} bytes per row (max_row_bytes, --max-row-bytes); the row was not read"
        )


def input_format(path: Path) -> InputFormat | None:
    name = path.name.lower()
    for suffix, fmt in sorted(SUFFIXES.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return fmt
    return None


def resolve_inputs(
    specs: Sequence[str | Path], max_row_bytes: int = DEFAULT_MAX_ROW_BYTES
) -> list[InputFile]:
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
        found.extend(
            InputFile(path.resolve(), input_format(path), max_row_bytes)  # type: ignore[arg-type]
            for path in files
        )
    seen: set[Path] = set()
    for item in found:
        if item.path in seen:
            raise InputError(f"{item.path}: given more than once")
        seen.add(item.path)
    return found


def _open_lines(source: InputFile) -> IO[bytes]:
    return gzip.open(source.path, "rb") if source.format == "jsonl.gz" else source.path.open("rb")


def _records(source: InputFile) -> Iterator[bytes | OversizedLine]:
    """The non-blank lines of a JSONL file, read a buffer at a time (never the whole file). A line over
    ``source.max_row_bytes`` is never held: it is skipped a buffer at a time and comes as an
    :class:`OversizedLine`, so memory stays bounded by the limit whatever the file holds."""
    limit = source.max_row_bytes
    with _open_lines(source) as handle:
        number = 0
        while line := handle.readline(limit + 1):
            number += 1
            if len(line) > limit and not line.endswith(b"\n"):
                size = len(line)
                while (rest := handle.readline(_SKIP_BYTES)) and not rest.endswith(b"\n"):
                    size += len(rest)
                size += len(rest.rstrip(b"\r\n"))
                yield OversizedLine(number, size, line[:_HEAD_BYTES])
            elif line.strip():
                yield line.rstrip(b"\r\n")


def _lines(source: InputFile) -> Iterator[bytes]:
    """The lines within the row limit (over-long lines are the reader's rejects)."""
    return (line for line in _records(source) if isinstance(line, bytes))


def read_schema(source: InputFile) -> pl.Schema:
    """Column names and types: Parquet metadata, or inferred from the first rows of a JSONL file."""
    try:
        if source.format == "parquet":
            return pl.scan_parquet(source.path).collect_schema()
        head = [line for line in itertools.islice(_lines(source), JSONL_INFER_ROWS) if _is_object(line)]
        if not head:
            return pl.Schema()
        return pl.read_ndjson(io.BytesIO(b"\n".join(head)), infer_schema_length=None).schema
    except Exception as error:  # polars and gzip raise many kinds for unreadable files
        raise InputError(f"{source.path}: cannot read ({_first_line(error)})") from error


def _is_object(line: bytes) -> bool:
    """Whether a JSONL line holds a JSON object (bad lines are left out of type inference)."""
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def fingerprint(source: InputFile) -> tuple[int, str, int]:
    """(bytes, sha256 of the file, rows), reading the file in buffers."""
    try:
        with source.path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if source.format == "parquet":
            rows = pq.ParquetFile(source.path).metadata.num_rows
        else:
            rows = sum(1 for _ in _records(source))
    except Exception as error:
        raise InputError(f"{source.path}: cannot read ({_first_line(error)})") from error
    return source.path.stat().st_size, digest, rows


def image_files_digest(
    source: InputFile,
    images_column: str | None,
    question_column: str,
    max_image_bytes: int = DEFAULT_IMAGE_LIMITS.max_image_bytes,
) -> str | None:
    """sha256 over the (path, content sha256) of every image file the rows name by a path (relative to the
    input file), in the images column or in the question's chat image parts, sorted; None when they name no
    file. A missing file is left to the row's own error."""
    schema = read_schema(source)
    columns = [
        column
        for column in (images_column, question_column)
        if column is not None and column_dtype(schema, column) is not None
    ]
    if not columns:
        return None
    if source.format == "parquet":
        tops = sorted({column.split(".")[0] for column in columns})
        records = pq.read_table(source.path, columns=tops).to_pylist()
    else:
        records = [json.loads(line) for line in _lines(source) if _is_object(line)]
    paths: set[str] = set()
    for record in records:
        if images_column is not None:
            value = lookup(record, images_column)
            paths.update(_image_paths(value if isinstance(value, list | tuple) else [value]))
        question = lookup(record, question_column)
        if isinstance(question, list):
            parts = [
                part
                for message in question
                if isinstance(message, dict) and isinstance(message.get("content"), list)
                for part in message["content"]
                if isinstance(part, dict) and part.get("type") == "image" and "base64" not in part
            ]
            paths.update(_image_paths([part.get("image") or part.get("path") for part in parts]))
    digest = hashlib.sha256()
    found = False
    for name in sorted(paths):
        path = Path(name) if Path(name).is_absolute() else source.path.parent / name
        try:  # as a row reads it: a regular file within the image byte limit, read bounded
            data = read_image_file(path, max_image_bytes)
        except FieldProblem:
            continue  # missing, not a regular file, over the limit or unreadable: the row's own error
        digest.update(f"{name}\0{hashlib.sha256(data).hexdigest()}\0".encode("utf-8", "surrogatepass"))
        found = True
    return digest.hexdigest() if found else None


def _image_paths(items: Sequence[Any]) -> set[str]:
    """The image paths among ``items`` (paths, bytes, {bytes, path} structs, data: URLs)."""
    paths = set()
    for item in items:
        if isinstance(item, dict) and item.get("bytes") is None:
            item = item.get("path")
        if isinstance(item, str) and item and not item.startswith(("data:", "http://", "https://")):
            paths.add(item)
    return paths


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


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
    raw: list[str | None]  # the JSONL line as read (None for Parquet rows)
    errors: dict[int, str]  # row (in this batch) -> why it could not be read

    def __len__(self) -> int:
        return len(self.records)


def as_written(batch: SourceBatch, local: int) -> dict[str, Any]:
    """A row's values as its file holds them: a JSONL line's own JSON (as ``score`` reads it), not the
    column types inferred for the file, which turn a list or an object into text in a text column and an
    integer into a float in a float column; a Parquet row as read."""
    raw = batch.raw[local]
    if raw is None:
        return batch.records[local]
    try:
        parsed = json.loads(raw)
    except ValueError:
        return batch.records[local]
    return parsed if isinstance(parsed, dict) else batch.records[local]


@dataclass(frozen=True, slots=True)
class _Chunk:
    source: InputFile
    offset: int  # row index within the file of the first row
    frame: pl.DataFrame
    raw: list[str | None]
    errors: dict[int, str]

    def slice(self, start: int, length: int | None = None) -> _Chunk:
        stop = self.frame.height if length is None else start + length
        return _Chunk(
            self.source,
            self.offset + start,
            self.frame.slice(start, stop - start),
            self.raw[start:stop],
            {i - start: reason for i, reason in self.errors.items() if start <= i < stop},
        )


class SourceReader:
    """Reads the inputs in order, a slice at a time; memory holds one read chunk and the current take."""

    def __init__(
        self,
        files: Sequence[InputFile],
        schemas: Sequence[pl.Schema],
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
        self._chunks = self._iter_chunks(files, schemas)
        self._pending: deque[_Chunk] = deque()
        self._next_index = 0

    def take(self, n: int) -> SourceBatch:
        """The next ``n`` rows (fewer at the end of the input or the limit)."""
        if self._limit is not None:
            n = max(0, min(n, self._limit - self._next_index))
        parts: list[_Chunk] = []
        wanted = n
        while wanted > 0:
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._pending.append(chunk)
            chunk = self._pending.popleft()
            if chunk.frame.height > wanted:
                self._pending.appendleft(chunk.slice(wanted))
                chunk = chunk.slice(0, wanted)
            parts.append(chunk)
            wanted -= chunk.frame.height
        return self._assemble(parts)

    def _assemble(self, parts: list[_Chunk]) -> SourceBatch:
        files: list[str] = []
        file_rows: list[int] = []
        records: list[dict[str, Any]] = []
        raw: list[str | None] = []
        errors: dict[int, str] = {}
        tables: list[pa.Table] = []
        for chunk in parts:
            errors |= {len(records) + i: reason for i, reason in chunk.errors.items()}
            files.extend([str(chunk.source.path)] * chunk.frame.height)
            file_rows.extend(range(chunk.offset, chunk.offset + chunk.frame.height))
            records.extend(chunk.frame.to_dicts())
            raw.extend(chunk.raw)
            tables.append(self._kept_table(chunk.source, chunk.frame))
        kept = pa.concat_tables(tables) if tables else self._kept_schema.empty_table()
        batch = SourceBatch(self._next_index, files, file_rows, records, kept, raw, errors)
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

    def _iter_chunks(self, files: Sequence[InputFile], schemas: Sequence[pl.Schema]) -> Iterator[_Chunk]:
        for source, schema in zip(files, schemas, strict=True):
            offset = 0
            try:
                if source.format == "parquet":
                    for frame in pl.scan_parquet(source.path).collect_batches(chunk_size=self._read_rows):
                        if frame.height:
                            yield _Chunk(source, offset, frame, [None] * frame.height, {})
                            offset += frame.height
                    continue
                lines: list[bytes | OversizedLine] = []
                for line in _records(source):
                    lines.append(line)
                    if len(lines) == self._read_rows:
                        yield _parse_lines(source, offset, lines, schema)
                        offset += len(lines)
                        lines = []
                if lines:
                    yield _parse_lines(source, offset, lines, schema)
            except (OSError, EOFError, pl.exceptions.PolarsError) as error:
                raise InputError(
                    f"{source.path}: cannot read near row {offset} ({_first_line(error)})"
                ) from error


def _parse_lines(
    source: InputFile, offset: int, lines: list[bytes | OversizedLine], schema: pl.Schema
) -> _Chunk:
    """Parse JSONL lines with the file's column types; a line that does not parse, or is over the row
    limit, becomes a null row with its reason (it goes to the rejects with the line as read, or the first
    bytes of an over-long line)."""
    raw: list[str | None] = [
        line.decode("utf-8", errors="replace")
        if isinstance(line, bytes)
        else line.head.decode("utf-8", errors="replace") + " [...]"
        for line in lines
    ]
    whole = [line for line in lines if isinstance(line, bytes)]
    if len(whole) == len(lines):
        try:
            return _Chunk(source, offset, _read_ndjson(whole, schema), raw, {})
        except pl.exceptions.PolarsError:
            pass
    frames: list[pl.DataFrame] = []
    errors: dict[int, str] = {}
    for i, line in enumerate(lines):
        if isinstance(line, OversizedLine):
            errors[i] = line.reason(source)
            frames.append(pl.DataFrame({name: [None] for name in schema}, schema=schema))
            continue
        try:
            frames.append(_read_ndjson([line], schema))
        except pl.exceptions.PolarsError as error:
            errors[i] = (
                f"line does not parse as a JSON object with the file's column types ({_first_line(error)})"
            )
            frames.append(pl.DataFrame({name: [None] for name in schema}, schema=schema))
    return _Chunk(source, offset, pl.concat(frames, how="vertical"), raw, errors)


def _read_ndjson(lines: list[bytes], schema: pl.Schema) -> pl.DataFrame:
    if not schema:
        raise pl.exceptions.ComputeError("the file's first rows hold no columns")
    return pl.read_ndjson(io.BytesIO(b"\n".join(lines)), schema=schema)
