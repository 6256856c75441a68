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


def _part_summary(path: Path) -> tuple[dict[str, float], pl.Series]:
    """Sums over one part file, and its process rewards (for the quantiles). One file is read at a time."""
    frame = pl.read_parquet(
        path, columns=["outcome", "sft_gate", "process_reward", "max_reward", "v0", "truncated", "steps"]
    )
    process = pl.col("process_reward")
    sums = frame.select(
        pl.len().cast(pl.Float64).alias("annotated"),
        pl.col("outcome").sum().cast(pl.Float64),
        pl.col("sft_gate").sum().cast(pl.Float64),
        pl.col("max_reward").sum(),
        pl.col("v0").sum(),
        v_final().sum().alias("v_final"),
        pl.col("steps").list.len().sum().cast(pl.Float64).alias("n_steps"),
        pl.col("truncated").sum().cast(pl.Float64),
        ((pl.col("outcome") == 1) & (process == 0)).sum().cast(pl.Float64).alias("lucky_guesses"),
        (process == 0).sum().cast(pl.Float64).alias("zero_process_reward"),
    ).row(0, named=True)
    return sums, frame.get_column("process_reward")


def reward_stats(parts: Sequence[Path]) -> dict[str, Any]:
    """Counts and reward summaries: outcome and SFT rates, process-reward quantiles, steps.

    Memory holds one part file's columns at a time plus each trace's process reward (8 bytes).
    """
    totals: dict[str, float] = {}
    rewards: list[pl.Series] = []
    for path in parts:
        sums, process = _part_summary(path)
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + (value or 0.0)
        rewards.append(process)
    n = int(totals.get("annotated", 0))
    if n == 0:
        return {"annotated": 0}
    process = pl.concat(rewards)

    def mean(key: str) -> float:
        return round(totals[key] / n, 6)

    return {
        "annotated": n,
        "outcome_rate": mean("outcome"),
        "sft_rate": mean("sft_gate"),
        "process_reward_mean": round(float(process.mean()), 6),  # type: ignore[arg-type]
        "process_reward_p10": round(float(process.quantile(0.1, "linear")), 6),  # type: ignore[arg-type]
        "process_reward_p50": round(float(process.quantile(0.5, "linear")), 6),  # type: ignore[arg-type]
        "process_reward_p90": round(float(process.quantile(0.9, "linear")), 6),  # type: ignore[arg-type]
        "process_reward_max": round(float(process.max()), 6),  # type: ignore[arg-type]
        "zero_process_reward_rate": mean("zero_process_reward"),
        "max_reward_mean": mean("max_reward"),
        "v0_mean": mean("v0"),
        "v_final_mean": mean("v_final"),
        "steps_mean": mean("n_steps"),
        "truncated": int(totals["truncated"]),
        "lucky_guesses": int(totals["lucky_guesses"]),
    }
