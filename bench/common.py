"""What the benchmarks share: the GSM8K rollouts they read and the BENCHMARKS.md section they write."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
DEFAULT_ROLLOUTS = ROOT.parent / "shared" / "data" / "gsm8k_rollouts.jsonl"


def spread_gsm8k_traces(path: Path, count: int) -> list:
    """``count`` rollouts taken at an even stride through the file: spread over problems and generators."""
    from mig_annotator.schemas import Trace

    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    stride = max(1, len(rows) // count)
    return [
        Trace(
            id=r["id"],
            question=r["question"],
            completion=r["completion"],
            reference_answer=r["reference_answer"],
        )
        for r in rows[::stride][:count]
    ]


def write_benchmark_section(heading: str, body: str) -> None:
    """Replace the ``## heading`` section of BENCHMARKS.md with ``body`` (appended if absent); others stay."""
    text = (
        BENCHMARKS.read_text()
        if BENCHMARKS.exists()
        else "# Benchmarks\n\nEvery number comes from the command shown.\n"
    )
    section = f"## {heading}\n\n{body.strip()}\n"
    start = text.find(f"## {heading}\n")
    if start == -1:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end:] if end != -1 else "")
    BENCHMARKS.write_text(text)
