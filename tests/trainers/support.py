"""What the TRL tests share: their small CPU GRPO run, and the service's audit rows per request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


def cpu_grpo_config(output_dir: Path, steps: int) -> Any:
    """TRL's ``GRPOConfig`` of the trainer tests: CPU, 8 completions a step (2 prompts x 4), 24 new tokens."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir),
        use_cpu=True,
        max_steps=steps,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=24,
        learning_rate=1e-6,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
    )


def audit_requests(directory: Path, key_id: str) -> list[list[dict[str, Any]]]:
    """The audit rows of one API key, grouped by request, in the order the requests arrived."""
    rows = [
        row for segment in sorted(directory.glob("*.parquet")) for row in pq.read_table(segment).to_pylist()
    ]
    requests: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["api_key_id"] == key_id:
            requests.setdefault(row["request_id"], []).append(row)
    return sorted(requests.values(), key=lambda group: group[0]["received_at"])
