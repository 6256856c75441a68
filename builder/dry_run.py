"""``build --dry-run``: check the column mapping on every input and annotate the first few rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from mig_annotator.builder.annotate import WindowAnnotator
from mig_annotator.builder.plan import inspect_inputs, kept_columns
from mig_annotator.builder.settings import BuildSettings
from mig_annotator.builder.sources import SourceReader
from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.probe.base import Probe
from mig_annotator.schemas.arrow import DatasetRow

DRY_RUN_ROWS = 3


@dataclass
class DryRunResult:
    files: list[str]
    id_present: bool
    kept_columns: list[str]
    rows: list[DatasetRow] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    rows_read: int = 0


def dry_run(settings: BuildSettings, probe: Probe, wanted: int = DRY_RUN_ROWS) -> DryRunResult:
    """Annotate the first ``wanted`` rows that map to traces; report the rejects met on the way."""
    files, schemas, id_present = inspect_inputs(settings)
    kept = kept_columns(settings, schemas)
    result = DryRunResult([str(source.path) for source in files], id_present, [c.source for c in kept])
    reader = SourceReader(
        files,
        schemas,
        pa.schema([c.field for c in kept]),
        [c.source for c in kept],
        limit=settings.limit,
        read_rows=64,
    )
    windows = WindowAnnotator(
        Annotator(probe, settings.scoring), settings.scoring, settings.columns, id_present, wanted, None
    )
    while len(result.rows) < wanted:
        batch = reader.take(16)
        if not len(batch):
            break
        result.rows_read += len(batch)
        prepared = windows.prepare(batch)
        result.rejects.extend(prepared.rejects)
        accepted = sorted((row for group in prepared.groups for row in group), key=lambda row: row.local)
        chosen = accepted[: wanted - len(result.rows)]
        if not chosen:
            continue
        scored = windows.score(batch, chosen)
        result.rejects.extend(scored.rejects)
        fixed = [name for name in DatasetRow.model_fields]
        for row in scored.rows.select(fixed).to_pylist():
            result.rows.append(DatasetRow.model_validate(row))
    return result
