"""Trainer exports of a built dataset, streamed with polars.

* ``sft``: the dual-gated SFT subset (correct outcome and process reward over the threshold) as
  ``prompt``/``completion`` rows.
* ``prm``: TRL's stepwise-supervision format, ``prompt``/``completions``/``labels``, with one completion
  per scored step. In that format a label says "this step is correct", so the label rules say whether a
  step kept the probe's value rather than whether it earned reward (:data:`STEP_LABEL_RULES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from mig_annotator.builder.errors import DatasetError
from mig_annotator.builder.layout import OutputLayout
from mig_annotator.builder.step_label_rules import StepLabels
from mig_annotator.builder.storage import commit, tmp_path

ExportKind = Literal["sft", "prm"]
ExportFormat = Literal["parquet", "jsonl"]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    source_rows: int


def dataset_parts(dataset: Path) -> list[Path]:
    """The part files of a finished build; a clear error for anything else."""
    layout = OutputLayout(dataset)
    if not layout.manifest.is_file():
        raise DatasetError(f"{dataset}: not a built dataset (no _manifest.json)")
    if not layout.success.is_file():
        raise DatasetError(f"{dataset}: the build has not finished (no _SUCCESS); run the build again")
    return layout.parts()


def export_format(path: Path) -> ExportFormat:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    raise DatasetError(f"--out {path}: name it .parquet or .jsonl")


def sft_rows(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.filter(pl.col("sft_gate")).select(
        pl.col("question").alias("prompt"), pl.col("completion").alias("completion")
    )


def step_labels(labels: StepLabels) -> pl.Expr:
    """Each row's step labels (a list of booleans, one per step) under ``labels``' rule."""
    steps = pl.col("steps")
    if labels.rule == "new-max":
        return steps.list.eval(pl.element().struct.field("reward") > 0)
    if labels.rule == "no-drop":
        return steps.list.eval(pl.element().struct.field("mig") >= -labels.tau)
    values = steps.list.eval(pl.element().struct.field("v"))
    best_before = pl.concat_list([pl.col("v0"), values]).list.eval(pl.element().cum_max())
    margins = values - best_before.list.head(values.list.len())
    return margins.list.eval(pl.element() >= -labels.tau)


def prm_rows(frame: pl.LazyFrame, labels: StepLabels | None = None) -> pl.LazyFrame:
    steps = pl.col("steps")
    return frame.filter(steps.list.len() > 0).select(
        pl.col("question").alias("prompt"),
        steps.list.eval(pl.element().struct.field("text")).alias("completions"),
        step_labels(labels or StepLabels()).alias("labels"),
    )


def export(dataset: Path, kind: ExportKind, out: Path, labels: StepLabels | None = None) -> ExportResult:
    """Write the export atomically to ``out`` (.parquet or .jsonl); rows keep the dataset's order."""
    parts = dataset_parts(dataset)
    fmt = export_format(out)
    frame = pl.scan_parquet([str(path) for path in parts])
    selected = sft_rows(frame) if kind == "sft" else prm_rows(frame, labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(out)
    try:
        if fmt == "parquet":
            selected.sink_parquet(tmp, compression="zstd", maintain_order=True)
        else:
            selected.sink_ndjson(tmp, maintain_order=True)
        commit(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    exported = int(selected.select(pl.len()).collect().item())
    source_rows = int(frame.select(pl.len()).collect().item())
    return ExportResult(out, exported, source_rows)
