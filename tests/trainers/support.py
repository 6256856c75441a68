"""What the TRL tests share: their small CPU GRPO run, and the service's audit rows per request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

# The gate-open fixture: few-shot plain-text prompts SmolLM2-135M continues in form ("A: 3 + 4 = 7.
# The answer is 7."), so most sampled completions are correct with max_k r_k > 0 and open the SFT gate.
FEW_SHOT = (
    "Q: What is 2 + 2?\nA: 2 + 2 = 4.\nThe answer is 4.\n\n"
    "Q: What is 5 + 1?\nA: 5 + 1 = 6.\nThe answer is 6.\n\n"
    "Q: What is {}?\nA:"
)
PROMPTS = [(FEW_SHOT.format("3 + 4"), "7"), (FEW_SHOT.format("6 + 2"), "8")]


def gate_open_dataset() -> Any:
    """The trainer tests' dataset: PROMPTS as a ``prompt`` column and the reference in ``answer``."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": q, "answer": a} for q, a in PROMPTS])


def cpu_grpo_config(output_dir: Path, steps: int) -> Any:
    """TRL's ``GRPOConfig`` of the trainer tests: CPU, 8 completions a step (2 prompts x 4), 24 new tokens."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,  # GRPOConfig's default bf16 autocast makes the CPU's backward a slow fallback matmul
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
