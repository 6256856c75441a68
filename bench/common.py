"""What the benchmarks share: the GSM8K rollouts they read and the BENCHMARKS.md section they write."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
DEFAULT_ROLLOUTS = ROOT.parent / "shared" / "data" / "gsm8k_rollouts.jsonl"


def add_rollouts_option(parser: argparse.ArgumentParser) -> None:
    """``--rollouts PATH``: the GSM8K rollouts a benchmark reads (default: the shared data)."""
    parser.add_argument(
        "--rollouts",
        type=Path,
        default=DEFAULT_ROLLOUTS,
        help=f"GSM8K rollouts JSONL (default: {DEFAULT_ROLLOUTS}, see ../shared/data/README.md)",
    )


def require_rollouts(path: Path) -> Path:
    """``path`` when it is a file, else exit naming it (a benchmark that measures real rollouts has no
    stand-in for them)."""
    if not path.is_file():
        sys.exit(
            f"no GSM8K rollouts at {path}: this benchmark needs the shared data "
            "(../shared/data/gsm8k_rollouts.jsonl, see its README) or --rollouts PATH"
        )
    return path


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


def question_rollouts(path: Path, questions: int) -> list[list[dict]]:
    """The rollouts of ``questions`` questions spread over the file (those with 4 rollouts, as the shared
    data has them), each question's rows in file order."""
    by_question: dict[str, list[dict]] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                by_question.setdefault(row["question_id"], []).append(row)
    groups = [rows for rows in by_question.values() if len(rows) == 4]
    stride = max(1, len(groups) // questions)
    return groups[::stride][:questions]


def grpo_groups(rollouts: list[list[dict]], per_question: int) -> list:
    """GRPO groups of ``per_question`` traces: 4, a question's own rollouts; 8 or 16, the real rollouts of
    2 or 4 questions pooled under the first question (never duplicated completions)."""
    from mig_annotator.schemas import Trace

    pooled = per_question // 4
    groups = []
    for start in range(0, len(rollouts) - pooled + 1, pooled):
        head = rollouts[start][0]
        rows = [row for question in rollouts[start : start + pooled] for row in question]
        groups.append(
            [
                Trace(
                    id=row["id"],
                    question=head["question"],
                    completion=row["completion"],
                    reference_answer=head["reference_answer"],
                )
                for row in rows
            ]
        )
    return groups


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
