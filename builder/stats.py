"""Reward statistics of a built dataset, computed by streaming over its Parquet files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl


def v_final() -> pl.Expr:
    """v_K: the last step's value, or v_0 for a trace without steps."""
    return (
        pl.when(pl.col("steps").list.len() > 0)
        .then(pl.col("steps").list.last().struct.field("v"))
        .otherwise(pl.col("v0"))
    )


def reward_stats(parts: Sequence[Path]) -> dict[str, Any]:
    """Counts and reward summaries: outcome and SFT rates, process-reward quantiles, steps."""
    if not parts:
        return {"annotated": 0}
    frame = pl.scan_parquet([str(path) for path in parts])
    process = pl.col("process_reward")
    summary = frame.select(
        pl.len().alias("annotated"),
        pl.col("outcome").mean().alias("outcome_rate"),
        pl.col("sft_gate").cast(pl.Float64).mean().alias("sft_rate"),
        process.mean().alias("process_reward_mean"),
        process.quantile(0.1, "linear").alias("process_reward_p10"),
        process.median().alias("process_reward_p50"),
        process.quantile(0.9, "linear").alias("process_reward_p90"),
        process.max().alias("process_reward_max"),
        (process == 0).cast(pl.Float64).mean().alias("zero_process_reward_rate"),
        pl.col("max_reward").mean().alias("max_reward_mean"),
        pl.col("v0").mean().alias("v0_mean"),
        v_final().mean().alias("v_final_mean"),
        pl.col("steps").list.len().mean().alias("steps_mean"),
        pl.col("truncated").sum().alias("truncated"),
        ((pl.col("outcome") == 1) & (process == 0)).sum().alias("lucky_guesses"),
    ).collect(engine="streaming")
    row = summary.row(0, named=True)
    return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in row.items()}
