"""Service on a GRPO-shaped load: exact batching with a group as one probe call, against one call per trace.

Two ``mig-annotator serve`` processes (real SmolLM2 probe, exact batching, audit log on) run side by side:

* before: ``MIG_PROBE__GROUP_PREFIXES=false``: every trace is scored in a probe call of its own (what exact
  batching did for every group before groups became its unit);
* after: the default: each GRPO group of a micro-batch is one probe call that forwards the question prompt
  once and scores v_0 once.

Each load is one GRPO step: one request per group, all sent at once. Real GSM8K rollouts from the shared data:

* 4 per question: the 4 completions the file holds for each of ``--questions`` questions;
* 8 per question: two questions' rollouts pooled into one group of 8 (the 4 completions of each, every one
  asked with the first question's text and reference answer), so no completion appears twice.

Per load and mode: wall time of the step, tokens the probe forwarded (``mig_tokens_forwarded_total``), and
the before/after ratios; the after annotations must equal the before ones to 1e-5 (grouped scoring only
changes float rounding). Both modes run in this one process's lifetime, alternating, so the ratios compare
numbers measured seconds apart.

    .venv/bin/python bench/service_grpo.py --rollouts ../shared/data/gsm8k_rollouts.jsonl --questions 6
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    add_rollouts_option,
    grpo_groups,
    question_rollouts,
    require_rollouts,
    write_benchmark_section,
)
from service_load import ServerProcess

sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mig_annotator.schemas import Trace, TraceAnnotation

HEADING = "Service: GRPO groups in exact batching"
MODES = {"before": {"MIG_PROBE__GROUP_PREFIXES": "false"}, "after": {}}


@dataclass(frozen=True)
class Step:
    """One GRPO step through one service."""

    seconds: float
    tokens_forwarded: int
    annotations: list[TraceAnnotation]


def _tokens_forwarded(url: str) -> int:
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("mig_tokens_forwarded_total "):
            return int(float(line.rsplit(" ", 1)[1]))
    raise RuntimeError("mig_tokens_forwarded_total is not in /metrics")


async def _send_step(url: str, groups: list[list[Trace]]) -> list[TraceAnnotation]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        bodies = [{"traces": [t.model_dump(mode="json", exclude_none=True) for t in g]} for g in groups]
        responses = await asyncio.gather(*(client.post("/v1/annotate", json=body) for body in bodies))
    annotations = []
    for response in responses:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        annotations += [TraceAnnotation.model_validate(a) for a in response.json()["annotations"]]
    return annotations


def run_step(url: str, groups: list[list[Trace]]) -> Step:
    before = _tokens_forwarded(url)
    started = time.perf_counter()
    annotations = asyncio.run(_send_step(url, groups))
    seconds = time.perf_counter() - started
    return Step(seconds, _tokens_forwarded(url) - before, annotations)


def max_difference(first: list[TraceAnnotation], second: list[TraceAnnotation]) -> float:
    """The largest difference in any number the probe decides (v_0, v_k, mig, watermark, r_k, totals)."""

    def numbers(a: TraceAnnotation) -> list[float]:
        steps = [value for s in a.steps for value in (s.v, s.mig, s.watermark, s.reward)]
        return [a.v0, *steps, a.process_reward, a.max_reward]

    worst = 0.0
    for x, y in zip(first, second, strict=True):
        if (x.trace_id, x.outcome, len(x.steps)) != (y.trace_id, y.outcome, len(y.steps)):
            raise RuntimeError(f"{x.trace_id}: before and after disagree beyond the numbers")
        worst = max([worst, *(abs(p - q) for p, q in zip(numbers(x), numbers(y), strict=True))])
    return worst


def format_report(results: dict[int, dict[str, Step]], meta: dict[str, str]) -> str:
    lines = [
        f"{meta['date']}, {meta['machine']}, shared with other sessions (load average at start "
        f"{meta['load']}): compare ratios within this run only. SmolLM2-135M, float32, probe threads "
        f"{meta['threads']}, exact batching; one GRPO step = one request per group, all sent at once; "
        f"{meta['questions']} GSM8K questions' real rollouts (8 per question: two questions' rollouts "
        "pooled).",
        "",
        "| completions per question | groups x traces | before: wall | after: wall | wall before/after "
        "| before: tokens forwarded | after: tokens forwarded | tokens before/after | max abs difference |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for per_question, steps in results.items():
        before, after = steps["before"], steps["after"]
        groups = len(before.annotations) // per_question
        lines.append(
            f"| {per_question} | {groups} x {per_question} | {before.seconds:.1f} s | "
            f"{after.seconds:.1f} s | {before.seconds / after.seconds:.2f} | "
            f"{before.tokens_forwarded:,} | {after.tokens_forwarded:,} | "
            f"{before.tokens_forwarded / after.tokens_forwarded:.2f} | "
            f"{max_difference(before.annotations, after.annotations):.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_rollouts_option(parser)
    parser.add_argument("--questions", type=int, default=6, help="GSM8K questions (even: pooled in pairs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each service's probe")
    parser.add_argument("--write", action="store_true", help=f"write BENCHMARKS.md's '## {HEADING}'")
    args = parser.parse_args()
    require_rollouts(args.rollouts)
    if args.questions < 2 or args.questions % 2:
        sys.exit("--questions must be an even number of at least 2 (the 8-per-question load pools pairs)")
    rollouts = question_rollouts(args.rollouts, args.questions)
    loads = {per_question: grpo_groups(rollouts, per_question) for per_question in (4, 8)}
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load": f"{os.getloadavg()[0]:.1f}",
        "threads": str(args.threads),
        "questions": str(len(rollouts)),
    }
    base = {"MIG_EXACT_BATCHING": "true", "MIG_PROBE__THREADS": str(args.threads)}
    warm_up = [[Trace(id="warm-up", question="1 + 1?", steps=["1 + 1 = 2."], reference_answer="2")]]
    results: dict[int, dict[str, Step]] = {}
    with ServerProcess({**base, **MODES["before"]}) as old, ServerProcess({**base, **MODES["after"]}) as new:
        servers = {"before": old.url, "after": new.url}
        for url in servers.values():
            run_step(url, warm_up)
        for per_question, groups in loads.items():
            results[per_question] = {}
            for mode, url in servers.items():
                step = run_step(url, groups)
                results[per_question][mode] = step
                print(
                    f"{per_question} per question, {mode:6s}: {step.seconds:6.1f} s, "
                    f"{step.tokens_forwarded:,} tokens forwarded",
                    flush=True,
                )
    report = format_report(results, meta)
    print(report)
    if args.write:
        command = (
            "`.venv/bin/python bench/service_grpo.py --rollouts ../shared/data/gsm8k_rollouts.jsonl "
            f"--questions {args.questions} --write`"
        )
        write_benchmark_section(HEADING, f"{command}\n\n{report}")


if __name__ == "__main__":
    main()
