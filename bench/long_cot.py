"""Long reasoning benchmark: 16k-token ``<think>`` traces and GRPO groups, in one run.

Workloads:

* ``long-cot``: synthetic ``<think>`` traces of about ``--long-tokens`` tokens written as prose
  (``tests/long_context.py``: one-line paragraphs and long runs of sentences on one line, which the prose
  splitter cuts at sentence ends; 100+ steps at 16k tokens), scored by a long-context variant of the
  default probe: SmolLM2's folder with ``max_position_embeddings`` raised and linear RoPE scaling (the
  weights are linked, not copied). An untuned rope-scaled model: its values are only good for timing.
  Configurations: naive on ``--naive-traces`` traces (the baseline; it forwards every prefix), packed
  unchunked, packed with each ``--chunk-tokens``.
* ``grpo-8``: ``--questions`` GSM8K questions from the shared rollouts, 8 completions each: the file holds 4
  rollouts per question, so each is taken twice (same text, ids ``<id>#1`` and ``<id>#2``). Configurations:
  naive, packed with ``group_prefixes`` off, packed with it on.
* ``grpo-4``: the same questions with their 4 real rollouts, packed ungrouped and grouped (the 'vs naive'
  ratio of these rows uses the ``grpo-8`` naive row: the same completions, each scored twice there).

Every configuration is a dict of ``TransformersProbeSettings`` fields passed through as given, run in its own
subprocess (peak RSS is per configuration: the process's VmHWM, reset after the model is loaded and warmed
up, so it measures the scoring). Ratios are against baselines measured in the same run. Also printed: the
minimal forwarded tokens of the first 1,200 shared rollouts with the default prompt, ungrouped and grouped.

    python bench/long_cot.py --write          # full size; the naive long-CoT row takes longest and runs last
    python bench/long_cot.py --quick          # smoke run, tiny sizes (not part of `make test`)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import DEFAULT_ROLLOUTS, write_benchmark_section  # noqa: E402

WORKLOADS = ("long-cot", "grpo-8", "grpo-4")
COUNT_ROLLOUTS = 1200  # the grouped-minimal figure's workload: the first 1,200 shared rollouts
ROPE_NOTE = (
    "The long-CoT probe is SmolLM2-135M with linear RoPE scaling and no tuning for it: its values are only "
    "good for timing, not for rewards."
)


# ----------------------------------------------------------------------------------------------------------
# workloads
# ----------------------------------------------------------------------------------------------------------


def long_cot_traces(tokenizer, count: int, target_tokens: int, first_seed: int = 0) -> list:
    """``count`` synthetic ``<think>`` prose traces (:func:`tests.long_context.long_think_trace`, the trace
    the long-context tests score), seeds ``first_seed``, ``first_seed + 1``, ..."""
    from mig_annotator.schemas import Trace
    from tests.long_context import long_think_trace

    return [
        Trace(**long_think_trace(tokenizer, target_tokens, seed).row(f"long-{seed}"))
        for seed in range(first_seed, first_seed + count)
    ]


def read_rollouts(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def grpo_traces(path: Path, questions: int, copies: int) -> list:
    """The rollouts of ``questions`` questions spread evenly over the file, each rollout ``copies`` times,
    a question's completions next to each other (as a GRPO batch lays them out)."""
    from mig_annotator.schemas import Trace

    by_question: dict[str, list[dict]] = {}
    for row in read_rollouts(path):
        by_question.setdefault(row["question_id"], []).append(row)
    question_ids = list(by_question)
    stride = max(1, len(question_ids) // questions)
    traces = []
    for question_id in question_ids[::stride][:questions]:
        for copy in range(1, copies + 1):
            for row in by_question[question_id]:
                traces.append(
                    Trace(
                        id=row["id"] if copies == 1 else f"{row['id']}#{copy}",
                        question=row["question"],
                        completion=row["completion"],
                        reference_answer=row["reference_answer"],
                    )
                )
    return traces


def long_context_model(source: Path, factor: int, parent: Path) -> Path:
    """A folder under ``parent`` holding ``source``'s files as links and a config.json whose context is
    ``factor`` times longer, under linear RoPE scaling by ``factor`` (transformers' ``rope_parameters``;
    older configs call it ``rope_scaling``)."""
    config = json.loads((source / "config.json").read_text())
    base_context = int(config["max_position_embeddings"])
    rope = dict(config.get("rope_parameters") or {})
    rope_theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    config["max_position_embeddings"] = base_context * factor
    config["rope_parameters"] = {"rope_type": "linear", "factor": float(factor), "rope_theta": rope_theta}
    config.pop("rope_scaling", None)
    target = parent / f"{source.name}-ctx{base_context * factor // 1024}k-linear{factor}"
    target.mkdir()
    for entry in source.iterdir():
        if entry.name != "config.json":
            (target / entry.name).symlink_to(entry.resolve())
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return target


# ----------------------------------------------------------------------------------------------------------
# one configuration (worker process)
# ----------------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def build_traces(spec: dict, tokenizer) -> list:
    workload = spec["workload"]
    if workload == "long-cot":
        return long_cot_traces(tokenizer, spec["traces"], spec["long_tokens"])
    copies = {"grpo-8": 2, "grpo-4": 1}[workload]
    return grpo_traces(Path(spec["rollouts"]), spec["questions"], copies)


def run_worker(spec: dict) -> dict:
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe import TransformersProbeSettings, open_probe
    from mig_annotator.engine.probe.groups import grouped_minimal_tokens
    from mig_annotator.schemas import ScoringConfig

    settings = TransformersProbeSettings(**spec["settings"], **spec["probe"])
    probe = open_probe(settings)
    config = ScoringConfig()
    with Annotator(probe) as annotator:
        traces = build_traces(spec, probe.tokenizer)
        plans = annotator.plan(traces, config)
        for plan in plans:
            if not hasattr(plan, "sequence"):
                raise plan  # a TraceError: the workload itself is wrong
        sequences = [plan.sequence for plan in plans]
        warm = (
            long_cot_traces(probe.tokenizer, 1, 300, first_seed=1000)
            if spec["workload"] == "long-cot"
            else grpo_traces(Path(spec["rollouts"]), 1, 1)[:2]
        )
        annotator.annotate(warm, config)  # thread pools, allocator, verifier workers
        if spec.get("sample_prefixes"):
            return _sampled_naive(spec, probe, sequences, annotator.plan(traces, config))
        loaded_rss = _status_kb("VmRSS")
        peak_reset = _reset_peak_rss()
        import torch

        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        stats = probe.stats
        before = (stats.tokens_forwarded, stats.tokens_padded, stats.seconds, stats.forward_calls)
        started = time.perf_counter()
        annotations = annotator.annotate(traces, config)
        elapsed = time.perf_counter() - started
    peak_rss = _status_kb("VmHWM") if peak_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "workload": spec["workload"],
        "label": spec["label"],
        "settings": spec["settings"],
        "traces": len(traces),
        "seconds": elapsed,
        "probe_seconds": stats.seconds - before[2],
        "forward_calls": stats.forward_calls - before[3],
        "tokens_real": stats.tokens_forwarded - before[0],
        "tokens_padded": stats.tokens_padded - before[1],
        "tokens_minimal": grouped_minimal_tokens(sequences, enabled=False),
        "tokens_minimal_grouped": grouped_minimal_tokens(sequences, enabled=True),
        "steps": sum(len(a.steps) for a in annotations),
        "trace_tokens": sum(s.boundaries[-1] - s.boundaries[0] for s in sequences),
        "truncated": sum(a.truncated for a in annotations),
        "loaded_rss_mb": loaded_rss / 1024,
        "peak_rss_mb": peak_rss / 1024,
        "peak_rss_is_scoring_only": peak_reset,
        "values": {a.trace_id: [a.v0, *(step.v for step in a.steps)] for a in annotations},
    }
    if cuda:
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _sampled_naive(spec: dict, probe, sequences: list, plans: list) -> dict:
    """The naive row of a trace too long to score naively in a bench run: ``sample_prefixes`` evenly
    spaced prefixes k (0 and K included) are scored as naive probes and timed; the trace's naive time is
    estimated as that time x (K+1) / samples (an even sample over k has the mean per-prefix cost)."""
    import numpy as np

    from mig_annotator.engine.prompt import ProbeSequence

    (sequence,) = sequences
    picks = np.unique(np.linspace(0, sequence.n_prefixes - 1, spec["sample_prefixes"]).round().astype(int))
    sampled = [
        ProbeSequence(
            sequence.trace_ids[: sequence.boundaries[k]],
            (sequence.boundaries[k],),
            sequence.continuation_ids,
            sequence.n_answer_tokens,
        )
        for k in picks
    ]
    peak_reset = _reset_peak_rss()
    started = time.perf_counter()
    probe.score(sampled)
    measured = time.perf_counter() - started
    peak_rss = _status_kb("VmHWM") if peak_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "workload": spec["workload"],
        "label": f"{spec['label']} (estimated: {len(picks)} of {sequence.n_prefixes} prefixes timed)",
        "settings": spec["settings"],
        "traces": 1,
        "seconds": measured * sequence.n_prefixes / len(picks),
        "measured_seconds": measured,
        "probe_seconds": measured,
        "forward_calls": len(picks),
        "tokens_real": sequence.naive_tokens,
        "tokens_padded": 0,
        "tokens_minimal": sequence.minimal_tokens,
        "tokens_minimal_grouped": sequence.minimal_tokens,
        "steps": plans[0].step_count,
        "trace_tokens": sequence.boundaries[-1] - sequence.boundaries[0],
        "truncated": 0,
        "loaded_rss_mb": 0.0,
        "peak_rss_mb": peak_rss / 1024,
        "peak_rss_is_scoring_only": peak_reset,
        "values": {},
    }


def count_worker(rollouts: Path) -> dict:
    """Minimal forwarded tokens of the first rollouts, ungrouped and grouped (default prompt and tokenizer;
    the fake probe stands in for the model: planning needs only the tokenizer)."""
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.model_store import resolve_model_path
    from mig_annotator.engine.probe import FakeProbeSettings, open_probe
    from mig_annotator.engine.probe.groups import group_sequences, grouped_minimal_tokens
    from mig_annotator.schemas import Trace

    rows = read_rollouts(rollouts)[:COUNT_ROLLOUTS]
    traces = [
        Trace(
            id=r["id"],
            question=r["question"],
            completion=r["completion"],
            reference_answer=r["reference_answer"],
        )
        for r in rows
    ]
    probe = open_probe(FakeProbeSettings(tokenizer=str(resolve_model_path(None))))
    with Annotator(probe) as annotator:
        sequences = [plan.sequence for plan in annotator.plan(traces)]
    return {
        "rollouts": len(rows),
        "groups": len(group_sequences(sequences)),
        "minimal": grouped_minimal_tokens(sequences, enabled=False),
        "minimal_grouped": grouped_minimal_tokens(sequences, enabled=True),
    }


# ----------------------------------------------------------------------------------------------------------
# the run (parent process)
# ----------------------------------------------------------------------------------------------------------


def configurations(args: argparse.Namespace, long_model: Path) -> list[dict]:
    """Every configuration: a workload, a label and the probe settings passed through unchanged."""
    probe = {"device": args.device, **({"threads": args.threads} if args.threads else {})}
    long_base = {
        "workload": "long-cot",
        "long_tokens": args.long_tokens,
        "probe": {**probe, "model": str(long_model)},
    }
    grpo_base = {"rollouts": str(args.rollouts), "questions": args.questions, "probe": probe}
    configs = [
        {
            **long_base,
            "label": "naive",
            "traces": args.naive_traces if not args.naive_prefixes else 1,
            "settings": {"mode": "naive"},
            **({"sample_prefixes": args.naive_prefixes} if args.naive_prefixes else {}),
        },
        {
            **long_base,
            "label": "packed, unchunked",
            "traces": args.long_traces,
            "settings": {"mode": "packed", "chunk_tokens": None},
        },
        *(
            {
                **long_base,
                "label": f"packed, chunk_tokens={tokens}",
                "traces": args.long_traces,
                "settings": {"mode": "packed", "chunk_tokens": tokens},
            }
            for tokens in args.chunk_tokens
        ),
        {**grpo_base, "workload": "grpo-8", "label": "naive", "settings": {"mode": "naive"}},
    ]
    for workload in ("grpo-8", "grpo-4"):
        for grouped in (False, True):
            label = "packed, grouped" if grouped else "packed, ungrouped"
            settings = {"mode": "packed", "group_prefixes": grouped}
            configs.append({**grpo_base, "workload": workload, "label": label, "settings": settings})
    return configs


def _runs_last(spec: dict) -> bool:
    """The long-CoT naive row takes longest by far: it runs last, so every other row is out before it."""
    return spec["workload"] == "long-cot" and spec["label"] == "naive"


def missing_fields(settings: dict) -> list[str]:
    from mig_annotator.engine.probe import TransformersProbeSettings

    return sorted(set(settings) - set(TransformersProbeSettings.model_fields))


def run_in_subprocess(arguments: list[str]) -> dict:
    command = [sys.executable, __file__, *arguments]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def max_value_difference(result: dict, baseline: dict | None) -> float | None:
    """Largest |v_k - v_k(baseline)| over the completions both scored (None without a baseline or overlap);
    a taken-twice GRPO completion (``<id>#2``) is the same completion as ``<id>``."""
    if baseline is None or result is baseline:
        return None
    reference = {trace_id.split("#")[0]: values for trace_id, values in baseline["values"].items()}
    pairs = [
        (values, reference[trace_id.split("#")[0]])
        for trace_id, values in result["values"].items()
        if trace_id.split("#")[0] in reference
    ]
    if not pairs:
        return None
    return max(abs(a - b) for values, expected in pairs for a, b in zip(values, expected, strict=True))


def format_table(results: list[dict]) -> str:
    columns = (
        "workload",
        "configuration",
        "traces",
        "steps/trace",
        "trace tokens/trace",
        "traces/s",
        "tokens forwarded",
        "forwarded/minimal",
        "vs naive",
        "vs ungrouped",
        "peak RSS MB (scoring)",
        "max abs dv vs naive",
    )
    lines = ["| " + " | ".join(columns) + " |", "| --- | --- |" + " ---: |" * (len(columns) - 2)]
    by_key = {(r["workload"], r["label"]): r for r in results}
    naive_rows = {r["workload"]: r for r in results if r["label"].startswith("naive")}
    for r in results:
        rate = r["traces"] / r["seconds"]
        naive = naive_rows.get(r["workload"]) or (
            by_key.get(("grpo-8", "naive")) if r["workload"] == "grpo-4" else None
        )
        ungrouped = by_key.get((r["workload"], "packed, ungrouped"))
        forwarded = r["tokens_real"] + r["tokens_padded"]
        versus_naive = f"{rate / (naive['traces'] / naive['seconds']):.2f}x" if naive else "-"
        versus_ungrouped = (
            f"{rate / (ungrouped['traces'] / ungrouped['seconds']):.2f}x"
            if ungrouped and r["workload"].startswith("grpo") and r["label"] != "naive"
            else "-"
        )
        difference = max_value_difference(r, naive)
        lines.append(
            f"| {r['workload']} | {r['label']} | {r['traces']} | {r['steps'] / r['traces']:.1f} "
            f"| {r['trace_tokens'] / r['traces']:.0f} | {rate:.3g} | {forwarded} "
            f"| {forwarded / r['tokens_minimal']:.3f} | {versus_naive} | {versus_ungrouped} "
            f"| {r['peak_rss_mb']:.0f} | {f'{difference:.1e}' if difference is not None else '-'} |"
        )
    return "\n".join(lines)


def notes(args: argparse.Namespace, results: list[dict], counts: dict, skipped: list[str]) -> str:
    import torch

    by_key = {(r["workload"], r["label"]): r for r in results}
    machine = (
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs,",
        f"torch {torch.__version__}, device {args.device}, fp32;",
        f"load average at start {args.load_at_start:.1f}.",
        "Each configuration in its own subprocess, one after the other;",
        "traces/s is end to end (planning, probe, answer check).",
        "Tokens forwarded include padding; minimal = every trace once plus every (answer prefix + answer),",
        "ungrouped. Peak RSS is the configuration's process high-water mark while scoring",
        "(reset after loading the model and a warm-up).",
    )
    long_cot = (
        f"long-cot: synthetic `<think>` traces of at least {args.long_tokens} tokens of prose",
        "(`tests/long_context.py`, seeds 0, 1, ...: one-line paragraphs and long runs of sentences on one",
        "line), default segmentation;",
        (
            f"naive: {args.naive_prefixes} evenly spaced prefixes of one trace timed, scaled to all its "
            "prefixes (its row says so);"
            if args.naive_prefixes
            else f"naive scores {args.naive_traces} trace(s);"
        ),
        f"packed {args.long_traces}.",
        f"Probe: SmolLM2-135M with max_position_embeddings {8192 * args.rope_factor}",
        f"and linear RoPE scaling, factor {args.rope_factor}. {ROPE_NOTE}",
    )
    grpo = (
        f"grpo-8: {args.questions} GSM8K questions (spread evenly over the shared rollouts), 8 completions",
        "each: **the file has 4 rollouts per question, so each is taken twice** (same text).",
        "grpo-4: the same questions with their 4 real rollouts; its 'vs naive' uses the grpo-8 naive row",
        "(the same completions). 'vs ungrouped' is against the same workload's packed ungrouped row.",
    )
    lines = [" ".join(machine), "", " ".join(long_cot), "", " ".join(grpo)]
    for workload in ("grpo-8", "grpo-4"):
        row = by_key.get((workload, "packed, grouped")) or by_key.get((workload, "packed, ungrouped"))
        if row:
            lines.append(
                f"- {workload}: minimal tokens {row['tokens_minimal']} ungrouped, "
                f"{row['tokens_minimal_grouped']} grouped "
                f"({row['tokens_minimal'] / row['tokens_minimal_grouped']:.2f}x)."
            )
    lines.append(
        f"- The first {counts['rollouts']:,} shared rollouts ({counts['groups']} questions), default prompt: "
        f"minimal tokens {counts['minimal']:,} ungrouped -> {counts['minimal_grouped']:,} grouped "
        f"({counts['minimal'] / counts['minimal_grouped']:.2f}x)."
    )
    if skipped:
        lines += ["", "Skipped (this probe's settings lack the field): " + "; ".join(skipped) + "."]
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=Path, default=DEFAULT_ROLLOUTS)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny sizes (2-4 minutes on 2 shared cores)"
    )
    parser.add_argument("--long-tokens", type=_positive, default=16000, help="tokens of each long-CoT trace")
    parser.add_argument("--long-traces", type=_positive, default=2, help="long-CoT traces, packed rows")
    parser.add_argument("--naive-traces", type=_positive, default=1, help="long-CoT traces, the naive row")
    parser.add_argument(
        "--naive-prefixes",
        type=int,
        default=0,
        help="long-CoT naive row: time this many evenly spaced prefixes of one trace and scale to all "
        "(0: score every prefix)",
    )
    parser.add_argument("--chunk-tokens", type=_positive, nargs="*", default=[4096, 2048, 1024])
    parser.add_argument("--rope-factor", type=_positive, default=4, help="linear RoPE factor (long model)")
    parser.add_argument("--questions", type=_positive, default=24, help="GSM8K questions (GRPO workloads)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS), help="a subset, to rerun one"
    )
    parser.add_argument("--write", action="store_true", help="write the tables into BENCHMARKS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--count-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.long_tokens, args.long_traces, args.naive_traces = 600, 1, 1
        args.chunk_tokens, args.questions = [256], 1
    return args


def main() -> None:
    args = parse_arguments()
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    if args.count_worker:
        print(json.dumps(count_worker(args.rollouts)))
        return
    if not args.rollouts.is_file():
        sys.exit(f"no rollouts at {args.rollouts}: pass --rollouts PATH")
    from mig_annotator.engine.model_store import resolve_model_path

    args.load_at_start = os.getloadavg()[0]
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="mig-long-cot-"))
    try:
        long_model = long_context_model(resolve_model_path(None), args.rope_factor, scratch)
        print(f"long-context probe: {long_model}. {ROPE_NOTE}", flush=True)
        counts = run_in_subprocess(["--count-worker", "--rollouts", str(args.rollouts)])
        print(json.dumps(counts), flush=True)
        specs = [spec for spec in configurations(args, long_model) if spec["workload"] in args.workloads]
        results, skipped = {}, []
        for index in sorted(range(len(specs)), key=lambda i: _runs_last(specs[i])):
            spec = specs[index]
            missing = missing_fields(spec["settings"])
            if missing:
                skipped.append(f"{spec['workload']} {spec['label']} (needs {', '.join(missing)})")
                print(f"skipped: {skipped[-1]}", flush=True)
                continue
            results[index] = run_in_subprocess(["--worker", json.dumps(spec)])
            shown = {key: value for key, value in results[index].items() if key != "values"}
            print(json.dumps(shown), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results = [results[index] for index in sorted(results)]
    table = format_table(results)
    text = notes(args, results, counts, skipped)
    print(f"\n{text}\n\n{table}\n\ntotal {time.perf_counter() - started:.0f} s")
    if args.write:
        if args.quick or skipped or len(args.workloads) < len(WORKLOADS):
            sys.exit("--write needs a full run of every configuration (not --quick, no workload left out)")
        command = (
            f"python bench/long_cot.py --long-tokens {args.long_tokens} --long-traces {args.long_traces} "
            f"--naive-traces {args.naive_traces} --naive-prefixes {args.naive_prefixes} "
            f"--chunk-tokens {' '.join(map(str, args.chunk_tokens))} "
            f"--rope-factor {args.rope_factor} --questions {args.questions}"
            + (f" --device {args.device}" if args.device != "auto" else "")
            + (f" --threads {args.threads}" if args.threads else "")
            + " --write"
        )
        write_benchmark_section("Long reasoning traces", f"`{command}`\n\n{text}\n\n{table}")


if __name__ == "__main__":
    main()
