"""Builder benchmark: build throughput against the engine alone, memory flatness, and the time to resume.

In one run (the machine is noisy, so every ratio compares numbers measured minutes apart):

1. the engine alone on the first N GSM8K rollouts: read them with ``read_traces_jsonl`` and annotate them
   in one ``Annotator.annotate`` call (the engine's best case: one length-sorted batch);
2. the builder on the same N rollouts, in-process with the same probe object: ``plan_build`` +
   ``run_build`` (gsm8k preset, default windows and groups), Parquet out. Ratio against (1); target >= 95%;
3. peak RSS of a build at each ``--memory-rows`` size of synthetic traces, each in its own subprocess, with
   the package's fake probe (``mig.probe.fake``, over SmolLM2's tokenizer; this measurement only: the
   tokenizer, segmenter and math-verify still run);
   target: flat within 100 MB;
4. the time to resume: ``mig-annotator build`` on the first ``--resume-rows`` rollouts is SIGKILLed once
   half its checkpoints are committed and started again; reported: launch to "resuming" (model load,
   input fingerprinting, checkpoint scan) against a cold start's launch to its first progress line, and
   the rows redone.

Prints the table and writes it under ``## Builder`` in BENCHMARKS.md (other sections stay).

    .venv/bin/python bench/builder.py --rollouts ../shared/data/gsm8k_rollouts.jsonl --limit 4000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_ROLLOUTS = ROOT.parent / "shared" / "data" / "gsm8k_rollouts.jsonl"
WORK = ROOT / "bench" / "out" / "builder"


TOKENIZER = ROOT / "bench" / "assets" / "smollm2-tokenizer"


def synthetic_rows(path: Path, rows: int) -> Path:
    """GSM8K-like rollouts (3-6 steps, `A: N` last), written once and reused."""
    if path.is_file() and sum(1 for _ in path.open()) == rows:
        return path
    rng = random.Random(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            steps = [
                f"Step {k}: we add {a} and {b * k} to get {a + b * k} items."
                for k in range(1, rng.randint(4, 7))
            ]
            answer = a + b if rng.random() < 0.5 else a + b + 1
            row = {
                "id": f"syn-{i:07d}",
                "question": f"A shop has {a} boxes and gets {b} more each day. How many after one day?",
                "completion": "\n".join([*steps, f"A: {answer}"]),
                "reference_answer": str(a + b),
                "generator": f"gen-{i % 4}",
                "is_correct": answer == a + b,
            }
            handle.write(json.dumps(row) + "\n")
    return path


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the parent across
    fork and exec, so a child of the benchmark would report the benchmark's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(input_path: Path, out: Path) -> None:
    """Build ``input_path`` with the fake probe; print rows, seconds and peak RSS as JSON."""
    from mig_annotator.builder.pipeline import run_build
    from mig_annotator.builder.plan import plan_build
    from mig_annotator.builder.settings import BuildSettings
    from mig_annotator.engine.probe.fake import FakeProbe

    shutil.rmtree(out, ignore_errors=True)
    probe = FakeProbe(tokenizer=str(TOKENIZER), context_limit=8192)
    started = time.perf_counter()
    plan = plan_build(BuildSettings(inputs=[str(input_path)], out=out), probe.identity())
    result = run_build(plan, probe)
    seconds = time.perf_counter() - started
    counts = result.manifest.counts
    print(
        json.dumps(
            {"rows": counts.input_rows if counts else 0, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}
        )
    )
    shutil.rmtree(out, ignore_errors=True)


# ------------------------------------------------------------------------------------------ measurements


def engine_alone(probe: Any, rollouts: Path) -> dict[str, Any]:
    """Read the rollouts and annotate them in one engine call."""
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.traces_io import read_traces_jsonl
    from mig_annotator.schemas import ScoringConfig

    started, cpu = time.perf_counter(), time.process_time()
    traces = read_traces_jsonl(rollouts)
    tokens_before = probe.stats.tokens_forwarded
    annotations = Annotator(probe, ScoringConfig()).annotate(traces)
    return {
        "traces": len(annotations),
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "tokens": probe.stats.tokens_forwarded - tokens_before,
        "process_reward": {a.trace_id: a.process_reward for a in annotations},
    }


def builder_in_process(probe: Any, rollouts: Path, out: Path) -> dict[str, Any]:
    """Plan and run a build of the rollouts (gsm8k preset, default layout) with the same probe object."""
    import polars as pl

    from mig_annotator.builder.columns import resolve_mapping
    from mig_annotator.builder.pipeline import run_build
    from mig_annotator.builder.plan import plan_build
    from mig_annotator.builder.settings import BuildSettings

    shutil.rmtree(out, ignore_errors=True)
    probe.identity()  # hashed once per probe, before the clock starts
    started, cpu = time.perf_counter(), time.process_time()
    settings = BuildSettings(
        inputs=[str(rollouts)], out=out, preset="gsm8k", columns=resolve_mapping("gsm8k")
    )
    plan = plan_build(settings, probe.identity())
    tokens_before = probe.stats.tokens_forwarded
    result = run_build(plan, probe)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    frame = pl.read_parquet(sorted(out.glob("part-*.parquet")), columns=["trace_id", "process_reward"])
    counts = result.manifest.counts
    return {
        "traces": counts.input_rows if counts else 0,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "tokens": probe.stats.tokens_forwarded - tokens_before,
        "process_reward": dict(zip(frame["trace_id"], frame["process_reward"], strict=True)),
    }


def interleaved(probe: Any, rollouts: Path, limit: int, blocks: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Engine and builder on the same rollouts, alternating block by block so load drift hits both alike."""
    lines = []
    with rollouts.open(encoding="utf-8") as handle:
        for line in handle:
            if len(lines) == limit:
                break
            lines.append(line)
    size = -(-len(lines) // blocks)
    totals = {
        name: {"traces": 0, "seconds": 0.0, "cpu_seconds": 0.0, "tokens": 0, "process_reward": {}}
        for name in ("engine", "builder")
    }
    for index in range(0, len(lines), size):
        block = WORK / "blocks" / f"rollouts-{index:05d}.jsonl"
        block.parent.mkdir(parents=True, exist_ok=True)
        block.write_text("".join(lines[index : index + size]), encoding="utf-8")
        runs = {
            "engine": lambda block=block: engine_alone(probe, block),
            "builder": lambda block=block: builder_in_process(probe, block, WORK / "dataset"),
        }
        order = ("engine", "builder") if (index // size) % 2 == 0 else ("builder", "engine")
        for name in order:
            result = runs[name]()
            total = totals[name]
            for key in ("traces", "seconds", "cpu_seconds", "tokens"):
                total[key] += result[key]
            total["process_reward"].update(result["process_reward"])
            print(
                f"  block {index // size + 1}, {name}: {result['traces'] / result['seconds']:.3f} traces/s",
                flush=True,
            )
    return totals["engine"], totals["builder"]


def peak_memory(rows: int) -> dict[str, Any]:
    source = synthetic_rows(WORK / f"synthetic-{rows}.jsonl", rows)
    done = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(source), str(WORK / f"memory-{rows}")],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_to_resume(rollouts: Path, rows: int, group_rows: int, threads: int) -> dict[str, Any]:
    """Kill a CLI build once half its groups are committed, then measure the restart."""
    out = WORK / "resume"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable, "-m", "mig_annotator.cli", "build", str(rollouts), "--out", str(out),
        "--preset", "gsm8k",
        "--limit", str(rows), "--group-rows", str(group_rows), "--threads", str(threads),
    ]  # fmt: skip
    groups = -(-rows // group_rows)

    def launch() -> tuple[subprocess.Popen[str], float, list[tuple[float, str]]]:
        env = os.environ | {"COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        began = time.monotonic()
        lines: list[tuple[float, str]] = []

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append((time.monotonic() - began, line))

        threading.Thread(target=read, daemon=True).start()
        return process, began, lines

    def first_line(lines: list[tuple[float, str]], prefix: str) -> tuple[float, str] | None:
        return next(((t, line) for t, line in lines if line.startswith(prefix)), None)

    first, began, first_lines = launch()
    while first.poll() is None:
        committed = len(list((out / "_work").rglob("group-[0-9][0-9][0-9][0-9].parquet")))
        if committed >= groups // 2:
            first.send_signal(signal.SIGKILL)
            first.wait()
            break
        time.sleep(0.01)
    killed_at = time.monotonic() - began
    cold = first_line(first_lines, "starting:")
    second, began, second_lines = launch()
    second.wait()
    rest = time.monotonic() - began
    time.sleep(0.2)  # let the reader drain
    if second.returncode != 0:
        raise RuntimeError(f"the resumed build failed ({second.returncode})")
    resumed = first_line(second_lines, "resuming:")
    if cold is None or resumed is None:
        raise RuntimeError("the builds did not print their starting/resuming lines")
    done_rows = int(resumed[1].split()[1].replace(",", ""))
    return {
        "rows": rows,
        "group_rows": group_rows,
        "cold_start_s": cold[0],
        "killed_after_s": killed_at,
        "resume_start_s": resumed[0],
        "rows_done_at_resume": done_rows,
        "resumed_run_s": rest,
    }


# ---------------------------------------------------------------------------------------------- report


def report(
    engine: dict, build: dict, memory: list[dict], resume: dict, limit: int, threads: int, blocks: int
) -> str:
    engine_rate = engine["traces"] / engine["seconds"]
    build_rate = build["traces"] / build["seconds"]
    shared = set(engine["process_reward"]) & set(build["process_reward"])
    max_diff = max(
        (abs(engine["process_reward"][t] - build["process_reward"][t]) for t in shared), default=0.0
    )
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), torch threads {threads}; "
        f"SmolLM2-135M probe, packed, float32; the first {limit} GSM8K rollouts, engine and builder "
        f"alternating over {blocks} blocks (one engine call and one build per block).",
        "",
        "| measurement | value | against the engine alone |",
        "| --- | ---: | ---: |",
        f"| engine alone: traces/s | {engine_rate:.3f} | 1.00 |",
        f"| builder (JSONL in, Parquet out): traces/s | {build_rate:.3f} | {build_rate / engine_rate:.3f} |",
        f"| engine alone: CPU seconds per trace | {engine['cpu_seconds'] / engine['traces']:.3f} | 1.00 |",
        f"| builder: CPU seconds per trace | {build['cpu_seconds'] / build['traces']:.3f} | "
        f"{(build['cpu_seconds'] / build['traces']) / (engine['cpu_seconds'] / engine['traces']):.3f} |",
        f"| engine alone: probe tokens/s | {engine['tokens'] / engine['seconds']:,.0f} | 1.00 |",
        f"| builder: probe tokens/s | {build['tokens'] / build['seconds']:,.0f} | "
        f"{(build['tokens'] / build['seconds']) / (engine['tokens'] / engine['seconds']):.3f} |",
        f"| max abs difference in process reward, builder vs engine | {max_diff:.2e} | |",
    ]
    for item in memory:
        lines.append(
            f"| peak RSS, {item['rows']:,} synthetic rows (fake probe) "
            f"| {item['peak_rss_mb']:,.0f} MB | ({item['rows'] / item['seconds']:,.0f} rows/s) |"
        )
    if len(memory) > 1:
        growth = memory[-1]["peak_rss_mb"] - memory[0]["peak_rss_mb"]
        lines.append(
            f"| peak RSS growth, {memory[0]['rows']:,} -> {memory[-1]['rows']:,} rows | {growth:+,.0f} MB | "
            "target: within 100 MB |"
        )
    lines += [
        f"| resume ({resume['rows']} rollouts, groups of {resume['group_rows']}): "
        f"cold start to scoring | {resume['cold_start_s']:.1f} s | |",
        f"| resume: restart to scoring again ({resume['rows_done_at_resume']} rows kept) "
        f"| {resume['resume_start_s']:.1f} s | |",
        f"| resume: the resumed run, end to end | {resume['resumed_run_s']:.1f} s | |",
    ]
    return "\n".join(lines)


def write_section(table: str, command: str, notes: str) -> None:
    """Replace the ``## Builder`` section of BENCHMARKS.md (created if absent); other sections stay."""
    path = ROOT / "BENCHMARKS.md"
    text = (
        path.read_text() if path.exists() else "# Benchmarks\n\nEvery number comes from the command shown.\n"
    )
    section = f"## Builder\n\n`{command}`\n\n{notes}\n\n{table}\n"
    start = text.find("## Builder\n")
    if start == -1:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end:] if end != -1 else "")
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=Path, default=DEFAULT_ROLLOUTS)
    parser.add_argument("--limit", type=int, default=4000, help="GSM8K rollouts for the throughput ratio")
    parser.add_argument("--memory-rows", type=int, nargs="+", default=[4000, 400000])
    parser.add_argument("--resume-rows", type=int, default=64)
    parser.add_argument("--resume-group-rows", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=4, help="engine/builder alternations")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the probe (less noise)")
    parser.add_argument("--notes", default="", help="a sentence written above the table")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument("--memory-child", nargs=2, metavar=("INPUT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(Path(args.memory_child[0]), Path(args.memory_child[1]))
        return
    if not args.rollouts.is_file():
        sys.exit(f"no rollouts at {args.rollouts}: pass --rollouts")

    import torch

    from mig_annotator.engine.probe import TransformersProbeSettings, open_probe

    probe = open_probe(TransformersProbeSettings(threads=args.threads))
    threads = torch.get_num_threads()
    print(f"engine alone and builder on {args.limit} rollouts ...", flush=True)
    engine, build = interleaved(probe, args.rollouts, args.limit, args.blocks)
    memory = []
    for rows in args.memory_rows:
        print(f"peak RSS at {rows:,} synthetic rows ...", flush=True)
        memory.append(peak_memory(rows))
        print(f"  {memory[-1]['peak_rss_mb']:,.0f} MB in {memory[-1]['seconds']:.0f} s", flush=True)
    print("time to resume after SIGKILL ...", flush=True)
    resume = time_to_resume(args.rollouts, args.resume_rows, args.resume_group_rows, threads)
    table = report(engine, build, memory, resume, args.limit, threads, args.blocks)
    print(table)
    if not args.no_write:
        shown = [arg for arg in sys.argv[1:] if arg != args.notes and arg != "--notes"]
        command = "python bench/builder.py " + " ".join(shown)
        write_section(table, command, args.notes)
        print(f"written to {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
