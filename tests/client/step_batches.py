"""Batches of a GRPO step's size for client tests and benchmarks: GSM8K rollouts (the shared data when
present, else generated ones of the same shape and size) and long chains of thought (the long-context
fixture's ``<think>`` prose, about 1,800 tokens each)."""

from __future__ import annotations

import json
from pathlib import Path

from mig_annotator.schemas import Trace

SHARED_ROLLOUTS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k_rollouts.jsonl"


def shared_gsm8k(count: int, path: Path = SHARED_ROLLOUTS) -> list[Trace] | None:
    """``count`` shared GSM8K rollouts (cycled when there are fewer), or None when the file is absent."""
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [
        Trace(
            id=f"{rows[i % len(rows)]['id']}-{i}",
            question=rows[i % len(rows)]["question"],
            completion=rows[i % len(rows)]["completion"],
            reference_answer=rows[i % len(rows)]["reference_answer"],
        )
        for i in range(count)
    ]


def generated_gsm8k(count: int) -> list[Trace]:
    """GSM8K-shaped rollouts (a 200-byte question, 5 to 8 lines of arithmetic, about 800 bytes in all),
    right and wrong: at 64 a request they are over 48,000 byte tokens, as the shared rollouts are."""
    traces = []
    for index in range(count):
        start, price, days = 20 + index % 37, 2 + index % 5, 3 + index % 4
        lines = [f"Janet starts the week with {start} eggs from her ducks and keeps a careful record."]
        total = start
        for day in range(1, days + 1):
            eaten = 1 + (index + day) % 3
            lines.append(
                f"On day {day} she eats {eaten} eggs, so {total} - {eaten} = {total - eaten} are left."
            )
            total -= eaten
        earned = total * price
        claimed = earned if index % 4 else earned + price
        lines.append(f"She sells the {total} remaining eggs at ${price} each: {total} * {price} = {claimed}.")
        lines.append(f"A: {claimed}")
        traces.append(
            Trace(
                id=f"gsm8k-like-{index}",
                question=f"Janet's ducks lay {start} eggs at the start of the week. Each day she eats a "
                f"few of them for breakfast. After {days} days she sells the rest at the farmers' market for "
                f"${price} per egg. How many dollars does she make?",
                completion="\n".join(lines),
                reference_answer=str(earned),
            )
        )
    return traces


def long_cot(count: int, target_tokens: int = 1800) -> list[Trace]:
    """``count`` long-context-fixture traces (:func:`tests.long_context.long_think_trace`), each about
    ``target_tokens`` SmolLM2 tokens of ``<think>`` prose (sized in bytes, about 4 a token, so no tokenizer
    need load), one seed each."""
    from mig_annotator.engine.probe.fake import ByteTokenizer
    from tests.long_context import long_think_trace

    traces = []
    for seed in range(count):
        made = long_think_trace(ByteTokenizer(), 4 * target_tokens, seed=seed)
        traces.append(
            Trace(
                id=f"long-cot-{seed}",
                question=made.question,
                completion=made.completion,
                reference_answer=str(made.answer),
            )
        )
    return traces
