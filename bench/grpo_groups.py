"""GRPO groups and long traces through the embedded probe, in one process: do the seconds follow the tokens?

Groups of real GSM8K rollouts from the shared data (``--rollouts``; see ``../shared/data/README.md``):

* 4 per question: the 4 completions the file holds for each of ``--questions`` questions;
* 8 and 16 per question: the rollouts of 2 (or 4) questions pooled into one group, every completion asked
  with the first question's text and reference answer, so no completion appears twice.

For each load, the packed probe scores the same sequences with ``group_prefixes`` false and true, alternating,
``--repeats`` times back to back in this one process (the best time of each is kept): tokens forwarded
(real), tokens computed (padding included), the grouped minimum (:func:`grouped_minimal_tokens`), seconds,
and the ratios. "time saved / tokens saved" is (1 - t_grouped / t_ungrouped) over (1 - computed_grouped /
computed_ungrouped): 1.0 when the seconds follow the computed tokens exactly.

Then the 32-step, 4,154-token long trace of ``bench/engine_speed.py``: the default settings and
``chunk_tokens``
forced to ``--chunk-tokens``, each against a plain causal forward of the backbone over the same number of
tokens measured in the same process (engine tok/s over plain tok/s; 1.0 is the ceiling). With
``--peak-tokens 16384``: the peak RSS of scoring one trace of that length (bench/long_cot.py's long-context
model), in a process of its own.

    .venv/bin/python bench/grpo_groups.py --rollouts ../shared/data/gsm8k_rollouts.jsonl --questions 8
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    add_rollouts_option,
    grpo_groups,
    question_rollouts,
    require_rollouts,
    write_benchmark_section,
)
from engine_speed import long_trace, plain_forward_rate

sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HEADING = "GRPO groups and chunked passes in the embedded probe"


def _measure(probe, sequences: list, repeats: int) -> dict:
    best = None
    for _ in range(repeats):
        stats = probe.stats
        before = (stats.tokens_forwarded, stats.tokens_padded)
        started = time.perf_counter()
        results = probe.score(sequences)
        seconds = time.perf_counter() - started
        row = {
            "seconds": seconds,
            "forwarded": stats.tokens_forwarded - before[0],
            "computed": stats.tokens_forwarded - before[0] + stats.tokens_padded - before[1],
            "results": results,
        }
        best = row if best is None or seconds < best["seconds"] else best
    return best


def group_rows(probes: dict, loads: dict, repeats: int) -> list[str]:
    import numpy as np

    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe.groups import grouped_minimal_tokens
    from mig_annotator.schemas import ScoringConfig

    lines = [
        "| per question | groups x traces | grouped minimum | ungrouped: forwarded / computed / s "
        "| grouped: forwarded / computed / s | computed ungrouped/grouped | time ungrouped/grouped "
        "| time saved / tokens saved | computed / grouped minimum | max abs diff |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for per_question, groups in loads.items():
        traces = [trace for group in groups for trace in group]
        sequences = [plan.sequence for plan in Annotator(probes[True]).plan(traces, ScoringConfig())]
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(repeats):  # alternate, so both settings see the same load
            for grouped, probe in probes.items():
                runs[grouped].append(_measure(probe, sequences, 1))
        off, on = (min(runs[g], key=lambda r: r["seconds"]) for g in (False, True))
        minimum = grouped_minimal_tokens(sequences)
        tokens, speed = off["computed"] / on["computed"], off["seconds"] / on["seconds"]
        saved = (1 - on["seconds"] / off["seconds"]) / (1 - on["computed"] / off["computed"])
        worst = max(
            float(np.abs(a.token_logprobs - b.token_logprobs).max())
            for a, b in zip(off["results"], on["results"], strict=True)
        )
        lines.append(
            f"| {per_question} | {len(groups)} x {per_question} | {minimum:,} "
            f"| {off['forwarded']:,} / {off['computed']:,} / {off['seconds']:.2f} "
            f"| {on['forwarded']:,} / {on['computed']:,} / {on['seconds']:.2f} | {tokens:.2f} | {speed:.2f} "
            f"| {saved:.2f} | {on['computed'] / minimum:.3f} | {worst:.1e} |"
        )
        print(lines[-1], flush=True)
    return lines


def long_rows(model: str | None, threads: int, chunk_tokens: int, repeats: int) -> list[str]:
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe import TransformersProbeSettings, open_probe
    from mig_annotator.schemas import ScoringConfig

    configurations = {
        "default (chunk from mask_budget_mb)": None,
        f"chunk_tokens={chunk_tokens}": chunk_tokens,
    }
    lines = [
        "| long trace, configuration | tokens computed | seconds | engine tok/s | plain fwd tok/s "
        "| engine/plain |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, chunk in configurations.items():
        probe = open_probe(TransformersProbeSettings(model=model, threads=threads, chunk_tokens=chunk))
        traces = long_trace()
        (plan,) = Annotator(probe).plan(traces, ScoringConfig())
        probe.score([plan.sequence])  # warm-up
        row = _measure(probe, [plan.sequence], repeats)
        plain = max(plain_forward_rate(probe, [plan.sequence], row["forwarded"]) for _ in range(repeats))
        rate = row["computed"] / row["seconds"]
        lines.append(
            f"| {label} | {row['computed']:,} | {row['seconds']:.2f} | {rate:.0f} | {plain:.0f} "
            f"| {rate / plain:.2f} |"
        )
        print(lines[-1], flush=True)
        probe.close()
    return lines


def peak_worker(tokens: int, threads: int) -> dict:
    """In its own process: one ``tokens``-token ``<think>`` trace (bench/long_cot.py's, on its rope-scaled
    long-context SmolLM2) scored with the default settings; the peak RSS of the scoring (VmHWM reset after
    the model is loaded and warmed up) and its seconds."""
    import tempfile

    from long_cot import long_context_model, long_cot_traces

    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.model_store import resolve_model_path
    from mig_annotator.engine.probe import TransformersProbeSettings, open_probe
    from mig_annotator.schemas import ScoringConfig

    model = long_context_model(resolve_model_path(None), 4, Path(tempfile.mkdtemp(prefix="mig-peak-")))
    probe = open_probe(TransformersProbeSettings(model=str(model), threads=threads))
    annotator = Annotator(probe)
    (plan,) = annotator.plan(long_cot_traces(probe.tokenizer, 1, tokens), ScoringConfig())
    (warm,) = annotator.plan(long_cot_traces(probe.tokenizer, 1, 300, first_seed=1000), ScoringConfig())
    probe.score([warm.sequence])
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    started = time.perf_counter()
    probe.score([plan.sequence])
    seconds = time.perf_counter() - started
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {
        "tokens": len(plan.sequence.trace_ids),
        "steps": plan.sequence.n_prefixes - 1,
        "seconds": seconds,
        "peak_mb": int(status["VmHWM"].split()[0]) / 1024,
    }


def peak_rows(tokens: int, threads: int) -> list[str]:
    import json
    import subprocess

    command = [sys.executable, __file__, "--peak-worker", str(tokens), "--threads", str(threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    row = json.loads(output.strip().splitlines()[-1])
    lines = [
        "| long-context trace, default configuration | trace tokens | steps | seconds | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| {tokens:,}-token target | {row['tokens']:,} | {row['steps']} | {row['seconds']:.1f} "
        f"| {row['peak_mb']:.0f} |",
    ]
    print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_rollouts_option(parser)
    parser.add_argument("--questions", type=int, default=8, help="GSM8K questions (a multiple of 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the probe")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting, alternating; best kept")
    parser.add_argument("--long-repeats", type=int, default=1, help="runs of each long-trace configuration")
    parser.add_argument("--chunk-tokens", type=int, default=2048, help="the forced chunk of the long trace")
    parser.add_argument("--no-long", action="store_true", help="skip the long trace")
    parser.add_argument(
        "--peak-tokens", type=int, default=0, help="also: peak RSS scoring a trace this long (0: skip)"
    )
    parser.add_argument("--peak-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help=f"write BENCHMARKS.md's '## {HEADING}'")
    args = parser.parse_args()
    if args.peak_worker:
        import json

        print(json.dumps(peak_worker(args.peak_worker, args.threads)))
        return
    require_rollouts(args.rollouts)
    if args.questions < 4 or args.questions % 4:
        sys.exit("--questions must be a multiple of 4 (the 16-per-question load pools four questions)")
    from mig_annotator.engine.probe import TransformersProbeSettings, open_probe

    load_start = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    rollouts = question_rollouts(args.rollouts, args.questions)
    loads = {n: grpo_groups(rollouts, n) for n in (4, 8, 16)}
    probes = {
        grouped: open_probe(TransformersProbeSettings(threads=args.threads, group_prefixes=grouped))
        for grouped in (False, True)
    }
    for probe in probes.values():  # warm-up
        probe.score([plan.sequence for plan in _plans(probe, loads[4][0][:2])])
    lines = group_rows(probes, loads, args.repeats)
    if not args.no_long:
        lines += ["", *long_rows(None, args.threads, args.chunk_tokens, args.long_repeats)]
    if args.peak_tokens:
        lines += ["", *peak_rows(args.peak_tokens, args.threads)]
    load_end = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    import torch

    header = (
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, SmolLM2-135M, fp32, probe threads {args.threads}, packed; load average "
        f"(1 / 5 / 15 min) {load_start} at start, {load_end} at the end. {len(rollouts)} GSM8K questions; "
        f"best of {args.repeats} alternating runs per setting (long trace: {args.long_repeats}), all in one "
        "process."
    )
    report = "\n".join([header, "", *lines])
    print(report)
    if args.write:
        command = (
            "`.venv/bin/python bench/grpo_groups.py --rollouts ../shared/data/gsm8k_rollouts.jsonl "
            f"--questions {args.questions} --threads {args.threads} --repeats {args.repeats} "
            f"--long-repeats {args.long_repeats} --peak-tokens {args.peak_tokens} --write`"
        )
        write_benchmark_section(HEADING, f"{command}\n\n{report}")


def _plans(probe, traces: list) -> list:
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.schemas import ScoringConfig

    return Annotator(probe).plan(traces, ScoringConfig())


if __name__ == "__main__":
    main()
