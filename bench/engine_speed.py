"""Engine benchmark: naive vs packed probes (two-pass and single-pass), on GSM8K and a long trace.

Each (workload, mode) runs in its own subprocess so peak RSS is per configuration. Reports traces/s,
tokens forwarded (padding included) over the minimal count, peak RSS, and, for packed, the engine's
tokens/s against a plain batched forward of the same model over the same number of tokens.

    .venv/bin/python bench/engine_speed.py --rollouts ../shared/data/gsm8k_rollouts.jsonl --limit 120 --write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import DEFAULT_ROLLOUTS, spread_gsm8k_traces, write_benchmark_section  # noqa: E402


def long_trace() -> list:
    """32 steps of ~130 tokens each: about 4k tokens of chain of thought."""
    from mig_annotator.schemas import Trace

    steps = []
    total = 0
    for k in range(1, 33):
        total += k * 7
        steps.append(
            f"Step {k}: the {k}th crate holds {k * 7} bolts, so the running total becomes "
            f"{total - k * 7} + {k * 7} = {total} bolts. We check this by recounting the previous crates one "
            f"by one, noting that "
            f"each crate after the first holds seven more bolts than the one before it, which keeps the sum "
            f"consistent with the pattern we found so far, and we carry the total of {total} forward to the "
            f"next crate, number {k + 1}, without rounding anything. We also note that {k} crates are now "
            f"counted and {32 - k} remain."
        )
    question = "A warehouse has 32 crates; crate k holds 7k bolts. How many bolts are there in total?"
    return [Trace(id="long-32-steps", question=question, steps=steps, reference_answer=str(total))]


def run_worker(workload: str, mode: str, rollouts: Path, limit: int, repeats: int) -> dict:
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe import TransformersProbeSettings, open_probe
    from mig_annotator.schemas import ScoringConfig

    traces = spread_gsm8k_traces(rollouts, limit) if workload == "gsm8k" else long_trace()
    probe = open_probe(TransformersProbeSettings(mode=mode))
    annotator = Annotator(probe)
    config = ScoringConfig()
    sequences = [annotator.plan([trace], config)[0].sequence for trace in traces]
    probe.score(sequences[:2])  # warm-up (thread pools, allocator)
    stats = probe.stats
    before_tokens, before_padded, before_seconds = stats.tokens_forwarded, stats.tokens_padded, stats.seconds
    started = time.perf_counter()
    for _ in range(repeats):
        annotator.annotate(traces, config)
    elapsed = time.perf_counter() - started
    result = {
        "workload": workload,
        "mode": mode,
        "traces": len(traces) * repeats,
        "seconds": elapsed,
        "probe_seconds": stats.seconds - before_seconds,
        "tokens_real": (stats.tokens_forwarded - before_tokens),
        "tokens_padded": (stats.tokens_padded - before_padded),
        "tokens_minimal": sum(s.minimal_tokens for s in sequences) * repeats,
        "steps": sum(s.n_prefixes - 1 for s in sequences),
    }
    if mode != "naive":
        result["plain_tokens_per_s"] = plain_forward_rate(probe, sequences, result["tokens_real"] // repeats)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def plain_forward_rate(probe, sequences: list, token_count: int) -> float:
    """Tokens/s of a plain causal forward (no custom mask, no LM head) over rows of the same shapes."""
    rows = sorted(
        (len(s.trace_ids) + s.n_prefixes * len(s.continuation_ids) for s in sequences), reverse=True
    )
    budget = probe.settings.forward_batch_tokens
    batches, batch = [], []
    for length in rows:
        if batch and (len(batch) + 1) * batch[0] > budget:
            batches.append(batch)
            batch = []
        batch.append(length)
    batches.append(batch)
    probe.plain_forward([[1] * batches[-1][0]] * len(batches[-1]))  # warm-up
    started = time.perf_counter()
    for lengths in batches:
        width = lengths[0]
        probe.plain_forward([[(i * 7 + j) % 1000 + 10 for j in range(width)] for i in range(len(lengths))])
    elapsed = time.perf_counter() - started
    computed = sum(len(lengths) * lengths[0] for lengths in batches)
    assert computed >= token_count
    return computed / elapsed


def format_table(results: list[dict]) -> str:
    lines = [
        "| workload | mode | traces | traces/s | tokens forwarded | forwarded/minimal | speed-up vs naive "
        "| engine tok/s | plain fwd tok/s | engine/plain | peak RSS MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    naive_rate = {r["workload"]: r["traces"] / r["seconds"] for r in results if r["mode"] == "naive"}
    for r in results:
        rate = r["traces"] / r["seconds"]
        forwarded = r["tokens_real"] + r["tokens_padded"]
        engine_rate = forwarded / r["probe_seconds"]
        plain = r.get("plain_tokens_per_s")
        lines.append(
            f"| {r['workload']} | {r['mode']} | {r['traces']} | {rate:.2f} | {forwarded} "
            f"| {forwarded / r['tokens_minimal']:.3f} | {rate / naive_rate[r['workload']]:.2f}x "
            f"| {engine_rate:.0f} | {f'{plain:.0f}' if plain else '-'} "
            f"| {f'{engine_rate / plain:.2f}' if plain else '-'} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=Path, default=DEFAULT_ROLLOUTS)
    parser.add_argument("--limit", type=int, default=120, help="GSM8K rollouts, spread over the file")
    parser.add_argument("--long-repeats", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    parser.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        workload, mode = args.worker
        repeats = args.long_repeats if workload == "long" else 1
        print(json.dumps(run_worker(workload, mode, args.rollouts, args.limit, repeats)))
        return
    if not args.rollouts.is_file():
        sys.exit(f"no rollouts at {args.rollouts}: pass --rollouts PATH")
    results = []
    for workload in ("gsm8k", "long"):
        for mode in ("naive", "packed-single", "packed"):
            command = [
                sys.executable,
                __file__,
                "--worker",
                workload,
                mode,
                "--rollouts",
                str(args.rollouts),
                "--limit",
                str(args.limit),
                "--long-repeats",
                str(args.long_repeats),
            ]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    table = format_table(results)
    print(table)
    if args.write:
        import torch

        notes = (
            f"Machine: {os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), fp32, SmolLM2-135M-Instruct. GSM8K: {args.limit} rollouts "
            f"taken every {4000 // args.limit}th from the 4,000; long: one synthetic 32-step trace, "
            f"scored {args.long_repeats}x. Tokens forwarded include padding; the minimal count is the trace "
            "once plus every (answer prefix + answer). 'plain fwd' is the backbone alone over rows of the "
            "same shapes with the built-in causal mask: the throughput ceiling for this many tokens."
        )
        command = (
            f"python bench/engine_speed.py --limit {args.limit} --long-repeats {args.long_repeats} --write"
        )
        write_benchmark_section("Engine", f"`{command}`\n\n{notes}\n\n{table}")


if __name__ == "__main__":
    main()
