"""Per-token advantages of one real GRPO group: what the decoupled estimator hands to the gradient.

    python examples/advantage_dump.py --data ../shared/data/gsm8k_rollouts.jsonl > dump.md

Takes the first question whose completions are both right and wrong (or ``--question-id``), annotates them
through the reward service (``--url``, else it starts ``mig-annotator serve`` on a free local port with the
default probe), places each annotation on the policy's tokens (``--tokenizer``, default the probe's
SmolLM2 tokenizer in ``$MIG_CACHE_DIR``) and prints, as Markdown, the advantages of
:func:`mig_annotator.trainer.advantages.group_token_advantages` in both placements: per step, the step's
reward r_k and the advantage its CoT tokens get; then the answer tokens, which get the outcome only.
Rows are JSON lines with ``question_id``, ``question``, ``completion`` and ``reference_answer``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mig_annotator.cli.serve_process import ServeProcess
from mig_annotator.client import MigClient
from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.token_alignment import token_offsets
from mig_annotator.trainer.advantages import (
    AdvantageSettings,
    credit_from_annotation,
    group_token_advantages,
    sft_gate,
)

CACHE = Path(os.environ.get("MIG_CACHE_DIR", Path.home() / ".cache" / "mig-annotator"))
DEFAULT_TOKENIZER = CACHE / "models" / "SmolLM2-135M-Instruct"


def pick_group(rows: Sequence[dict[str, Any]], question_id: str | None) -> list[dict[str, Any]]:
    """The rows of ``question_id``, else of the first question with right and wrong completions."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["question_id"]), []).append(row)
    if question_id is not None:
        if question_id not in groups:
            raise SystemExit(f"advantage_dump: no rows with question_id {question_id!r}")
        return groups[question_id]
    for members in groups.values():
        labels = {bool(row.get("is_correct")) for row in members}
        if len(members) > 1 and labels == {True, False}:
            return members
    raise SystemExit("advantage_dump: no question has both right and wrong completions (is_correct)")


@contextmanager
def service(url: str | None) -> Iterator[str]:
    """``url``, or a ``mig-annotator serve`` started here on a free port (stopped on exit)."""
    if url:
        yield url
        return
    with ServeProcess(stdout=sys.stderr) as server:
        yield server.url


def annotate(url: str, members: Sequence[dict[str, Any]]) -> list[TraceAnnotation]:
    traces = [
        Trace(
            id=str(row.get("id", i)),
            question=row["question"],
            completion=row["completion"],
            reference_answer=str(row["reference_answer"]),
            group_id=str(row["question_id"]),
        )
        for i, row in enumerate(members)
    ]
    with MigClient(url) as client:
        return client.annotate(traces)


def shorten(text: str, width: int = 60) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render(annotations: Sequence[TraceAnnotation], tokenizer: Any) -> str:
    credits, token_counts = [], []
    for annotation in annotations:
        ids = tokenizer.encode(annotation.completion, add_special_tokens=False)
        credits.append(
            credit_from_annotation(annotation, token_offsets(tokenizer, ids, annotation.completion))
        )
        token_counts.append(len(ids))
    placements = {p: AdvantageSettings(placement=p) for p in ("sequence", "step")}
    advantages = {p: group_token_advantages(credits, s) for p, s in placements.items()}
    settings = placements["sequence"]
    lines = [
        f"Settings: alpha = {settings.process_weight}, beta = {settings.outcome_weight}, outcome std on, "
        f"process std floor {settings.process_std_floor}, SFT gate max_k r_k > {settings.sft_threshold}.",
        "",
        "| completion | outcome | P = sum r_k | max r_k | SFT gate | tokens (CoT / answer) |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for i, (annotation, credit) in enumerate(zip(annotations, credits, strict=True)):
        cot = int(credit.cot_mask.sum())
        rest = int((credit.completion_mask & ~credit.cot_mask).sum())
        rewards = credit.step_rewards
        lines.append(
            f"| {i} | {annotation.outcome:g} | {rewards.sum():.3f} | {rewards.max(initial=0.0):.3f} | "
            f"{'open' if sft_gate(credit, settings) else 'closed'} | {token_counts[i]} ({cot} / {rest}) |"
        )
    for i, (annotation, credit) in enumerate(zip(annotations, credits, strict=True)):
        lines += ["", f"**Completion {i}** (outcome {annotation.outcome:g}):", ""]
        lines += [
            "| step | text | r_k | tokens | A (sequence) | A (step) |",
            "| ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        start = 0
        for k, (step, end) in enumerate(zip(annotation.steps, credit.step_end_tokens, strict=True), 1):
            if end < 0:
                continue
            span = np.arange(start, end + 1)
            span = span[credit.cot_mask[span]]
            start = int(end) + 1
            if not len(span):
                continue
            cells = [f"{advantages[p][i][span].mean():+.3f}" for p in ("sequence", "step")]
            lines.append(
                f"| {k} | {shorten(step.text)} | {step.reward:.3f} | {len(span)} | {cells[0]} | {cells[1]} |"
            )
        answer = credit.completion_mask & ~credit.cot_mask
        if answer.any():
            cells = [f"{advantages[p][i][answer].mean():+.3f}" for p in ("sequence", "step")]
            lines.append(
                f"| answer | (off the CoT: outcome only) | | {int(answer.sum())} | {cells[0]} | {cells[1]} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="JSON lines of rollouts")
    parser.add_argument("--question-id", help="the group to show (default: the first mixed one)")
    parser.add_argument("--url", help="a running reward service (default: start one here)")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="the policy's tokenizer")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"advantage_dump: {args.data} is not a file")
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    members = pick_group(rows, args.question_id)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    with service(args.url) as url:
        annotations = annotate(url, members)
    print(f"Question `{members[0]['question_id']}`: {shorten(members[0]['question'], 200)}\n")
    print(render(annotations, tokenizer), end="")


if __name__ == "__main__":
    main()
