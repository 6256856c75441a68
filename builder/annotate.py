"""Annotate one window of input rows: map and plan every row, then score length-sorted groups.

All engine work goes through :class:`Annotator`: :meth:`Annotator.plan` for the window (the CPU part, which
tells each row's probe tokens) and :meth:`Annotator.annotate_many` for each group. Rows that cannot become
traces, or that the engine refuses, are rejects with a reason. The accepted rows are sorted by probe length
(longest first, ties in input order) and cut into groups of ``group_rows``: each group is one probe call and
one checkpoint. The cut depends only on the window's rows, so a resumed build scores exactly the groups an
uninterrupted one would.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mig_annotator.builder.columns import ColumnMapping
from mig_annotator.builder.duplicates import FLAG, RowPlace, shorten
from mig_annotator.builder.rows import RowProblem, map_record, row_id, row_json
from mig_annotator.builder.sources import SourceBatch, as_written
from mig_annotator.builder.token_columns import TokenAligner, load_policy_tokenizer
from mig_annotator.engine.annotator import Annotator, PreparedTrace, TraceError
from mig_annotator.schemas import ScoringConfig, Trace
from mig_annotator.schemas.arrow import DATASET_ROW_SCHEMA, TOKEN_COLUMNS_SCHEMA, RejectStage
from mig_annotator.schemas.trace_images import thumbnail_png

if TYPE_CHECKING:
    from mig_annotator.builder.plan import BuildPlan

#: Checkpoint files carry each row's global input index in this column (dropped from the final files).
GLOBAL_ROW = "_global_row"


@dataclass(frozen=True, slots=True)
class AcceptedRow:
    local: int  # index within the window's batch
    prepared: PreparedTrace

    @property
    def probe_tokens(self) -> int:
        return self.prepared.probe_tokens


@dataclass
class PreparedWindow:
    groups: list[list[AcceptedRow]]
    rejects: list[dict[str, Any]]
    seconds: float


@dataclass
class GroupResult:
    rows: pa.Table
    rejects: list[dict[str, Any]]
    stats: dict[str, float] = field(default_factory=dict)


def reject_record(
    batch: SourceBatch,
    local: int,
    stage: RejectStage,
    field_name: str | None,
    reason: str,
    trace_id: str | None,
) -> dict[str, Any]:
    raw = batch.raw[local] if batch.raw[local] is not None else row_json(batch.records[local])
    return {
        "source_file": utf8_text(batch.files[local]),
        "source_row": batch.file_rows[local],
        "trace_id": None if trace_id is None else utf8_text(trace_id),
        "stage": stage,
        "field": None if field_name is None else utf8_text(field_name),
        "reason": utf8_text(reason),
        "row_json": utf8_text(raw),
        GLOBAL_ROW: batch.start + local,
    }


def utf8_text(text: str) -> str:
    """``text`` as UTF-8 can hold it (Parquet's strings must be valid UTF-8): a lone surrogate, which JSON
    may spell (``"\\ud800"``) but UTF-8 cannot, is written as its escape (``\\ud800``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class WindowAnnotator:
    """Maps, prepares and scores rows with one engine :class:`Annotator` and scoring config."""

    def __init__(
        self,
        annotator: Annotator,
        config: ScoringConfig,
        mapping: ColumnMapping,
        id_present: bool,
        group_rows: int,
        aligner: TokenAligner | None,
        dropped: Mapping[int, RowPlace] | None = None,
    ) -> None:
        self._annotator = annotator
        self._dropped = dropped or {}
        self._config = config
        self._mapping = mapping
        self._id_present = id_present
        self._group_rows = group_rows
        self._aligner = aligner
        fixed = list(DATASET_ROW_SCHEMA) + (list(TOKEN_COLUMNS_SCHEMA) if aligner else [])
        self._fixed_schema = pa.schema(fixed)

    @classmethod
    def for_plan(cls, plan: BuildPlan, annotator: Annotator) -> WindowAnnotator:
        """The window annotator of a planned build, the same for every engine: the plan's mapping, groups,
        policy-tokenizer columns, and the rows ``--on-duplicate-id drop`` leaves out."""
        settings = plan.settings
        aligner = None
        if settings.policy_tokenizer is not None:
            aligner = TokenAligner(load_policy_tokenizer(settings.policy_tokenizer))
        return cls(
            annotator,
            settings.scoring,
            settings.columns,
            plan.id_present,
            settings.group_rows,
            aligner,
            plan.duplicates.earlier,
        )

    def prepare(self, batch: SourceBatch) -> PreparedWindow:
        started = time.perf_counter()
        mapped_rows: list[tuple[int, Trace]] = []
        rejects: list[dict[str, Any]] = []
        for local in range(len(batch)):
            record = as_written(batch, local)
            if local in batch.errors:
                rejects.append(reject_record(batch, local, "mapping", None, batch.errors[local], None))
                continue
            first = self._dropped.get(batch.start + local)
            if first is not None:
                trace_id = row_id(record, self._mapping, batch.start + local, self._id_present)
                reason = f"id {shorten(trace_id or '')!r} repeats the id of {first} ({FLAG} drop)"
                rejects.append(reject_record(batch, local, "mapping", "id", reason, trace_id))
                continue
            mapped = map_record(
                record,
                self._mapping,
                batch.start + local,
                self._id_present,
                image_base_dir=str(Path(batch.files[local]).parent),
            )
            if isinstance(mapped, RowProblem):
                trace_id = row_id(record, self._mapping, batch.start + local, self._id_present)
                rejects.append(
                    reject_record(batch, local, mapped.stage, mapped.field, mapped.reason, trace_id)
                )
                continue
            mapped_rows.append((local, mapped))
        plans = self._annotator.plan([trace for _, trace in mapped_rows], self._config)
        accepted: list[AcceptedRow] = []
        for (local, trace), plan in zip(mapped_rows, plans, strict=True):
            if isinstance(plan, TraceError):
                rejects.append(reject_record(batch, local, "prepare", plan.field, plan.problem, trace.id))
            else:
                accepted.append(AcceptedRow(local, plan))
        rejects.sort(key=lambda reject: reject[GLOBAL_ROW])
        accepted.sort(key=lambda row: (-row.probe_tokens, row.local))
        groups = [accepted[i : i + self._group_rows] for i in range(0, len(accepted), self._group_rows)]
        return PreparedWindow(groups, rejects, time.perf_counter() - started)

    def score(self, batch: SourceBatch, group: list[AcceptedRow]) -> GroupResult:
        """Score one group; rows come back in the group's order with their global row index."""
        started = time.perf_counter()
        probe = self._annotator.probe
        probe_seconds_before = probe.stats.seconds
        results = self._annotator.annotate_many([row.prepared for row in group])
        probe_seconds = probe.stats.seconds - probe_seconds_before
        rows: list[dict[str, Any]] = []
        kept_rows: list[int] = []
        annotations = []
        rejects: list[dict[str, Any]] = []
        tokens = 0
        for row, annotation in zip(group, results, strict=True):
            trace = row.prepared.trace
            if isinstance(annotation, TraceError):  # non-finite probe values and the like
                rejects.append(
                    reject_record(batch, row.local, "scoring", annotation.field, annotation.problem, trace.id)
                )
                continue
            annotations.append(annotation)
            tokens += annotation.tokens_forwarded
            rows.append(
                annotation.model_dump()
                | {
                    "question": trace.question,
                    "reference_answer": trace.reference_answer,
                    "source_file": batch.files[row.local],
                    "source_row": batch.file_rows[row.local],
                    "question_images": [
                        {
                            "sha256": image.sha256,
                            "width": image.width,
                            "height": image.height,
                            "thumbnail_png": thumbnail_png(image),
                        }
                        for image in trace.images
                    ],
                }
            )
            kept_rows.append(row.local)
        if self._aligner is not None:
            for row_dict, columns in zip(rows, self._aligner.columns(annotations), strict=True):
                row_dict.update(columns.model_dump())
        table = pa.Table.from_pylist(rows, schema=self._fixed_schema)
        kept = batch.kept.take(pa.array(kept_rows, type=pa.int64()))
        for column_field, column in zip(kept.schema, kept.columns, strict=True):
            table = table.append_column(column_field, column)
        global_rows = pa.array([batch.start + local for local in kept_rows], type=pa.int64())
        table = table.append_column(pa.field(GLOBAL_ROW, pa.int64(), nullable=False), global_rows)
        stats = {
            "seconds": time.perf_counter() - started,
            "probe_seconds": probe_seconds,
            "tokens_forwarded": float(tokens),
            "steps": float(sum(len(annotation.steps) for annotation in annotations)),
        }
        return GroupResult(table, rejects, stats)
