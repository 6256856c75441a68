"""Build settings: what to read, how to map it, how to score it, and how to cut the work."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mig_annotator.builder.columns import ColumnMapping, DuplicatePolicy, PresetName
from mig_annotator.builder.sources import DEFAULT_MAX_ROW_BYTES
from mig_annotator.schemas import ScoringConfig


class BuildSettings(BaseModel):
    """Everything ``mig-annotator build`` needs except the probe itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: list[str] = Field(min_length=1, description="Files, folders or glob patterns.")
    out: Path
    preset: PresetName = "default"
    columns: ColumnMapping = Field(default_factory=ColumnMapping)
    keep_columns: list[str] | None = Field(
        default=None, description="Input columns copied to the output; None keeps every unmapped column."
    )
    limit: int | None = Field(default=None, ge=1, description="Read only the first N input rows.")
    max_row_bytes: int = Field(
        default=DEFAULT_MAX_ROW_BYTES,
        ge=1024,
        description="Bytes of one JSONL row (line): a longer row is a reject naming its file, line and this "
        "limit, skipped without being read whole or parsed, so one huge row cannot exhaust memory (parsing "
        "takes many times a row's size). Raise it for rows holding large base64 images.",
    )
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    policy_tokenizer: Path | None = Field(
        default=None, description="A local tokenizer folder: adds token-level columns."
    )
    shard_rows: int = Field(default=16384, ge=1, description="Input rows per output Parquet file.")
    window_rows: int = Field(
        default=1024, ge=1, description="Input rows prepared together and sorted by length for the probe."
    )
    group_rows: int = Field(default=64, ge=1, description="Traces per probe call and per checkpoint.")
    row_group_rows: int = Field(default=2048, ge=1, description="Rows per Parquet row group.")
    fail_on_reject: bool = False
    on_duplicate_id: DuplicatePolicy = Field(
        default="keep",
        description="Rows whose id repeats an earlier row's: keep (warn and count), drop (reject), error.",
    )
    overwrite: bool = False

    @model_validator(mode="after")
    def _windows_fit_shards(self) -> BuildSettings:
        if self.window_rows > self.shard_rows:
            raise ValueError(
                f"window_rows ({self.window_rows}) must not exceed shard_rows ({self.shard_rows})"
            )
        return self
