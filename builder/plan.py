"""Plan a build before any scoring: check every input's columns, fingerprint the inputs, cut the rows into
shards and windows, and fix the output schema.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from mig_annotator.builder.columns import OPTIONAL_FIELDS
from mig_annotator.builder.duplicates import DuplicateIds, find_duplicate_ids
from mig_annotator.builder.errors import InputError
from mig_annotator.builder.layout import OutputLayout
from mig_annotator.builder.manifest import (
    BuildIdentity,
    InputFingerprint,
    Layout,
    tokenizer_identity,
)
from mig_annotator.builder.settings import BuildSettings
from mig_annotator.builder.sources import (
    InputFile,
    arrow_type_of,
    column_dtype,
    fingerprint,
    image_files_digest,
    read_schema,
    resolve_inputs,
)
from mig_annotator.schemas import ProbeIdentity
from mig_annotator.schemas.arrow import RESERVED_COLUMNS, dataset_schema

#: Which flag sets each trace field's column, for error messages.
COLUMN_FLAGS = {
    "id": "--id-col",
    "question": "--question-col",
    "completion": "--completion-col",
    "steps": "--steps-col",
    "reference_answer": "--answer-col",
    "group_id": "--group-col",
    "images": "--images-col",
}
KEPT_PREFIX = "input_"


@dataclass(frozen=True, slots=True)
class KeptColumn:
    """An input column copied to the output (renamed with ``input_`` when it clashes with ours)."""

    source: str
    field: pa.Field


@dataclass(frozen=True, slots=True)
class WindowPlan:
    index: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, slots=True)
class ShardPlan:
    index: int
    start: int
    stop: int
    windows: tuple[WindowPlan, ...]

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class BuildPlan:
    settings: BuildSettings
    layout: OutputLayout
    files: list[InputFile]
    schemas: list[pl.Schema]
    identity: BuildIdentity
    id_present: bool
    kept: list[KeptColumn]
    output_schema: pa.Schema
    total_rows: int
    shards: list[ShardPlan]
    duplicates: DuplicateIds = dataclasses.field(default_factory=DuplicateIds)

    @property
    def kept_schema(self) -> pa.Schema:
        return pa.schema([column.field for column in self.kept])


def inspect_inputs(settings: BuildSettings) -> tuple[list[InputFile], list[pl.Schema], bool]:
    """Resolve the inputs and check each has the mapped columns; also says whether ids come from a column."""
    files = resolve_inputs(settings.inputs, settings.max_row_bytes)
    schemas = [read_schema(source) for source in files]
    mapping = settings.columns
    for source, schema in zip(files, schemas, strict=True):
        for field, column in mapping.mapped().items():
            if (field == "id" and not mapping.id_required) or field in OPTIONAL_FIELDS:  # optional columns
                continue
            if column_dtype(schema, column) is None:
                raise InputError(
                    f"{source.path}: column {column!r} ({COLUMN_FLAGS[field]}, preset {settings.preset!r}) "
                    f"not found; columns found: {', '.join(schema.names()) or '(none)'}"
                )
    id_present = mapping.id is not None and all(
        column_dtype(schema, mapping.id) is not None for schema in schemas
    )
    return files, schemas, id_present


def kept_columns(settings: BuildSettings, schemas: list[pl.Schema]) -> list[KeptColumn]:
    """The input columns to copy, with their Arrow types (from the first file where the type is known)."""
    mapped = settings.columns.content_columns()  # the group column is copied: no dataset field holds it
    if settings.keep_columns is None:
        names: list[str] = []
        for schema in schemas:
            names.extend(name for name in schema.names() if name not in mapped and name not in names)
    else:
        names = list(dict.fromkeys(settings.keep_columns))
        found = {name for schema in schemas for name in schema.names()}
        missing = [name for name in names if name not in found]
        if missing:
            raise InputError(
                f"--keep-cols: {', '.join(repr(name) for name in missing)} not in any input; "
                f"columns found: {', '.join(sorted(found))}"
            )
    kept: list[KeptColumn] = []
    for name in names:
        dtypes = [schema[name] for schema in schemas if name in schema]
        known = [dtype for dtype in dtypes if not isinstance(dtype, pl.Null)]
        data_type = arrow_type_of(known[0] if known else dtypes[0])
        output_name = f"{KEPT_PREFIX}{name}" if name in RESERVED_COLUMNS else name
        kept.append(KeptColumn(name, pa.field(output_name, data_type, nullable=True)))
    return kept


def plan_build(settings: BuildSettings, probe: ProbeIdentity) -> BuildPlan:
    """Check and fingerprint the inputs, find repeated ids, and lay out the work. Reads the inputs; writes
    nothing. Raises :class:`InputError` for a repeated id under ``--on-duplicate-id error``."""
    files, schemas, id_present = inspect_inputs(settings)
    kept = kept_columns(settings, schemas)
    fingerprints = []
    columns = settings.columns
    for source in files:
        size, digest, rows = fingerprint(source)
        fingerprints.append(
            InputFingerprint(
                path=str(source.path),
                format=source.format,
                bytes=size,
                sha256=digest,
                rows=rows,
                images_sha256=image_files_digest(source, columns.images, columns.question),
            )
        )
    total = sum(item.rows for item in fingerprints)
    if total == 0:
        raise InputError(f"the inputs hold no rows: {', '.join(str(source.path) for source in files)}")
    if settings.limit is not None:
        total = min(total, settings.limit)
    identity = BuildIdentity(
        inputs=fingerprints,
        limit=settings.limit,
        preset=settings.preset,
        columns=settings.columns,
        id_column_used=id_present,
        kept_columns=[column.source for column in kept],
        scoring=settings.scoring,
        config_hash=settings.scoring.config_hash(),
        probe=probe,
        policy_tokenizer=tokenizer_identity(settings.policy_tokenizer) if settings.policy_tokenizer else None,
        layout=Layout(
            shard_rows=settings.shard_rows, window_rows=settings.window_rows, group_rows=settings.group_rows
        ),
        on_duplicate_id=settings.on_duplicate_id,
        max_row_bytes=settings.max_row_bytes,
    )
    duplicates = find_duplicate_ids(
        files, schemas, settings.columns, id_present, settings.limit, settings.on_duplicate_id
    )
    output_schema = dataset_schema(
        token_columns=settings.policy_tokenizer is not None, kept=pa.schema([c.field for c in kept])
    )
    return BuildPlan(
        settings=settings,
        layout=OutputLayout(Path(settings.out)),
        files=files,
        schemas=schemas,
        identity=identity,
        id_present=id_present,
        kept=kept,
        output_schema=output_schema,
        total_rows=total,
        shards=cut_shards(total, settings.shard_rows, settings.window_rows),
        duplicates=duplicates,
    )


def cut_shards(total: int, shard_rows: int, window_rows: int) -> list[ShardPlan]:
    shards = []
    for index, start in enumerate(range(0, total, shard_rows)):
        stop = min(start + shard_rows, total)
        windows = tuple(
            WindowPlan(w, w_start, min(w_start + window_rows, stop))
            for w, w_start in enumerate(range(start, stop, window_rows))
        )
        shards.append(ShardPlan(index, start, stop, windows))
    return shards
