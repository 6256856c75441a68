"""Build settings: what to read, how to map it, how to score it, and how to cut the work."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mig_annotator.builder.columns import ColumnMapping, DuplicatePolicy, PresetName
from mig_annotator.schemas import ScoringConfig

DEFAULT_MAX_ROW_BYTES = 16 * 2**20
"""The default bound on one JSONL row's bytes (``BuildSettings.max_row_bytes``)."""


class BuildSettings(BaseModel):
    """Everything ``mig-annotator build`` needs except the probe itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: list[str] = Field(
        min_length=1, description="JSONL, JSONL.gz or Parquet files, folders or glob patterns."
    )
    out: Path = Field(description="The output folder.")
    preset: PresetName = Field(
        default="default", description="The column layout; the columns given one by one override it."
    )
    columns: ColumnMapping = Field(
        default_factory=ColumnMapping, description="Which input column holds each trace field."
    )
    keep_columns: list[str] | None = Field(
        default=None,
        description="Input columns copied to the output; None keeps every unmapped column (command line: "
        "comma-separated, 'none' for none).",
    )
    limit: int | None = Field(default=None, ge=1, description="Read only the first N input rows.")
    max_row_bytes: int = Field(
        default=DEFAULT_MAX_ROW_BYTES,
        ge=1024,
        description="Bytes of one JSONL row (line): a longer row is a reject naming its file, line and this "
        "limit, skipped without being read whole or parsed, so one huge row cannot exhaust memory (parsing "
        "takes many times a row's size). Raise it for rows holding large base64 images.",
    )
    scoring: ScoringConfig = Field(default_factory=ScoringConfig, description="What to score and how.")
    policy_tokenizer: Path | None = Field(
        default=None,
        description="A local tokenizer folder (the policy's): adds token_rewards and the cot, answer and "
        "completion masks.",
    )
    shard_rows: int = Field(default=16384, ge=1, description="Input rows per output Parquet file.")
    window_rows: int = Field(
        default=1024, ge=1, description="Input rows prepared together and sorted by length for the probe."
    )
    group_rows: int = Field(default=64, ge=1, description="Traces per probe call and per checkpoint.")
    row_group_rows: int = Field(default=2048, ge=1, description="Rows per Parquet row group.")
    fail_on_reject: bool = Field(default=False, description="Stop at the first row that cannot be annotated.")
    on_duplicate_id: DuplicatePolicy = Field(
        default="keep",
        description="Rows whose id repeats an earlier row's: keep (warn and count), drop (reject), error.",
    )
    overwrite: bool = Field(
        default=False, description="Discard a different build found in the output folder."
    )

    @model_validator(mode="after")
    def _windows_fit_shards(self) -> BuildSettings:
        if self.window_rows > self.shard_rows:
            raise ValueError(
                f"window_rows ({self.window_rows}) must not exceed shard_rows ({self.shard_rows})"
            )
        return self
