"""token_offsets when re-tokenising does not give back the sampled ids: linear incremental decoding against
the old prefix decoding (every prefix decoded again), both measured in this run on SmolLM2's tokenizer.

The sampled ids are a GSM8K-style text with every character encoded alone (so re-tokenising merges them and
the fallback runs), cut to 1,000 / 2,000 / 4,000 tokens; each timing is the best of ``--repeats`` runs.

    .venv/bin/python bench/token_offsets.py --write
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import write_benchmark_section  # noqa: E402

TOKENIZER = ROOT / "bench" / "assets" / "smollm2-tokenizer"
TEXT = "Natalia sold 48/2 = 24 clips in May, so 48 + 24 = 72 clips in all → ✓ Ünïcödé. "
HEADING = "Token offsets (policy ids that re-tokenise differently)"


def prefix_decoding(tokenizer: Any, token_ids: Sequence[int], text: str) -> list[tuple[int, int]]:
    """The quadratic algorithm the linear fallback replaced: decode every prefix."""
    special = set(tokenizer.all_special_ids)
    spans, previous_end = [], 0
    for position, token in enumerate(token_ids):
        if token in special:
            spans.append((previous_end, previous_end))
            continue
        prefix = tokenizer.decode(list(token_ids[: position + 1]), skip_special_tokens=True)
        end = max(previous_end, min(len(prefix), len(text)))
        spans.append((previous_end, end))
        previous_end = end
    return spans


def best_of(repeats: int, work: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help=f"write the '{HEADING}' section")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from mig_annotator.schemas.token_alignment import token_offsets

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER, local_files_only=True)
    unmerged: list[int] = []
    while len(unmerged) < max(args.sizes):
        for char in TEXT:
            unmerged.extend(tokenizer(char, add_special_tokens=False)["input_ids"])
    load = os.getloadavg()[0]
    rows = []
    for size in args.sizes:
        ids = unmerged[:size]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        new_s, new = best_of(args.repeats, lambda ids=ids, text=text: token_offsets(tokenizer, ids, text))
        old_s, old = best_of(args.repeats, lambda ids=ids, text=text: prefix_decoding(tokenizer, ids, text))
        same = [tuple(pair) for pair in new.tolist()] == old
        ratio = old_s / new_s
        rows.append(f"| {size:,} | {old_s * 1000:.0f} ms | {new_s * 1000:.1f} ms | {ratio:.0f}x | {same} |")
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            "`.venv/bin/python bench/token_offsets.py --write`",
            "",
            f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs; SmolLM2 tokenizer; "
            "ids of a GSM8K-style text with each character encoded alone (re-tokenising merges them, so the "
            f"fallback runs); best of {args.repeats}; load average at start {load:.1f}. Prefix decoding is "
            "the quadratic algorithm the linear fallback replaced, timed in the same run.",
            "",
            "| response tokens | prefix decoding (old) | incremental decoding | speed-up | same offsets |",
            "| ---: | ---: | ---: | ---: | --- |",
            *rows,
        ]
    )
    print(body)
    if args.write:
        write_benchmark_section(HEADING, body)


if __name__ == "__main__":
    main()
