"""Service load benchmark: the HTTP service against the in-process engine, on the same GSM8K traces.

In one run (the machine is noisy, so every ratio compares numbers measured minutes apart):

1. the in-process engine: one ``Annotator.annotate(traces)`` call (batched), and one call per trace;
2. the service (``mig-annotator serve`` in a subprocess, audit log on) at concurrency 1, 8 and 32, one trace
   per request, first with exact batching (the default: a trace's numbers never depend on the crowd) and
   then with packed batching (``MIG_EXACT_BATCHING=false``);
3. 2x overload: requests arriving at twice the throughput measured at concurrency 32, against a queue of
   8 traces: the share answered 429, and no 5xx.

Prints the table with ratios against the engine and writes it under ``## Service`` in BENCHMARKS.md.

    .venv/bin/python bench/service_load.py --rollouts ../shared/data/gsm8k_rollouts.jsonl --traces 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import add_rollouts_option, spread_gsm8k_traces  # noqa: E402

from mig_annotator.cli.serve_process import ServeProcess  # noqa: E402
from mig_annotator.schemas import Trace, TraceAnnotation  # noqa: E402

SAMPLE_TRACES = ROOT / "engine" / "data" / "sample_traces.jsonl"
OVERLOAD_QUEUE = 8


@dataclass
class Run:
    """One measured configuration."""

    name: str
    concurrency: int | None
    traces: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    identical: bool | None = None  # results equal the engine's per-trace results, bit for bit

    @property
    def throughput(self) -> float:
        return self.traces / self.seconds

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) if self.latencies else None


def load_traces(path: Path, count: int) -> list[Trace]:
    from mig_annotator.engine.traces_io import read_traces_jsonl

    if not path.is_file():
        print(f"no rollouts at {path}: using the {SAMPLE_TRACES.name} shipped with the package", flush=True)
        shipped = read_traces_jsonl(SAMPLE_TRACES)
        return [shipped[i % len(shipped)].model_copy(update={"id": f"sample-{i}"}) for i in range(count)]
    return spread_gsm8k_traces(path, count)


class Engine:
    """The in-process engine over the same probe settings as the service."""

    def __init__(self, threads: int | None) -> None:
        from mig_annotator.engine.annotator import Annotator
        from mig_annotator.engine.probe import TransformersProbeSettings, open_probe

        self.annotator = Annotator(open_probe(TransformersProbeSettings(threads=threads)))

    def batched_seconds(self, traces: list[Trace]) -> float:
        """One ``annotate(traces)`` call (the engine batches as it likes)."""
        self.annotator.annotate(traces[:2])  # warm-up
        started = time.perf_counter()
        self.annotator.annotate(traces)
        return time.perf_counter() - started

    def per_trace(self, traces: list[Trace]) -> tuple[Run, list[TraceAnnotation]]:
        latencies, singles = [], []
        started = time.perf_counter()
        for trace in traces:
            began = time.perf_counter()
            singles.append(self.annotator.annotate([trace])[0])
            latencies.append(time.perf_counter() - began)
        run = Run("engine: one trace per call", 1, len(traces), time.perf_counter() - started, latencies)
        return run, singles


class ServerProcess(ServeProcess):
    """``mig-annotator serve`` on a free 127.0.0.1 port with the benchmark's settings over ``env``
    (audit log in a temporary folder, warnings only, a 600 s request timeout)."""

    def __init__(self, env: dict[str, str]) -> None:
        self._audit = tempfile.TemporaryDirectory(prefix="mig-bench-audit-")
        settings = {
            "MIG_AUDIT_DIR": self._audit.name,
            "MIG_LOG_LEVEL": "warning",
            "MIG_REQUEST_TIMEOUT_S": "600",
        }
        super().__init__(env={**settings, **env}, cwd=ROOT)

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)
        self._audit.cleanup()


async def closed_loop(
    url: str, traces: list[Trace], concurrency: int
) -> tuple[float, list[float], list[dict]]:
    """``concurrency`` clients, each sending its next trace when its previous answer came back."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(traces)):
        queue.put_nowait(index)
    latencies: list[float] = [0.0] * len(traces)
    answers: list[dict] = [{}] * len(traces)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                began = time.perf_counter()
                body = {"trace": traces[index].model_dump(mode="json", exclude_none=True)}
                response = await client.post("/v1/annotate", json=body)
                latencies[index] = time.perf_counter() - began
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
                answers[index] = response.json()["annotations"][0]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies, answers


async def open_loop(
    url: str, traces: list[Trace], rate: float, requests: int
) -> tuple[list[int], list[float]]:
    """Requests arriving at ``rate`` per second whatever the answers; returns statuses and 200 latencies."""
    statuses: list[int] = []
    accepted: list[float] = []
    async with httpx.AsyncClient(
        base_url=url, timeout=600, limits=httpx.Limits(max_connections=None)
    ) as client:

        async def one(index: int) -> None:
            began = time.perf_counter()
            body = {"trace": traces[index % len(traces)].model_dump(mode="json", exclude_none=True)}
            response = await client.post("/v1/annotate", json=body)
            statuses.append(response.status_code)
            if response.status_code == 200:
                accepted.append(time.perf_counter() - began)

        tasks = []
        started = time.perf_counter()
        for index in range(requests):
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)
    return statuses, accepted


def measure_service(
    traces: list[Trace],
    threads: int | None,
    exact: bool,
    levels: list[int],
    engine_singles: list[TraceAnnotation],
) -> list[Run]:
    env = {"MIG_EXACT_BATCHING": "true" if exact else "false"}
    if threads is not None:
        env["MIG_PROBE__THREADS"] = str(threads)
    mode = "exact" if exact else "packed"
    runs = []
    with ServerProcess(env) as server:
        asyncio.run(closed_loop(server.url, traces[:2], 1))  # warm-up
        for concurrency in levels:
            seconds, latencies, answers = asyncio.run(closed_loop(server.url, traces, concurrency))
            served = [TraceAnnotation.model_validate(a) for a in answers]
            run = Run(f"service ({mode} batching)", concurrency, len(traces), seconds, latencies)
            run.identical = served == engine_singles
            runs.append(run)
            print(_line(run), flush=True)
    return runs


def measure_overload(traces: list[Trace], threads: int | None, rate: float) -> dict[str, float]:
    env = {"MIG_QUEUE_MAX_TRACES": str(OVERLOAD_QUEUE), "MIG_MAX_TRACES_PER_REQUEST": str(OVERLOAD_QUEUE)}
    if threads is not None:
        env["MIG_PROBE__THREADS"] = str(threads)
    requests = 2 * len(traces)
    with ServerProcess(env) as server:
        asyncio.run(closed_loop(server.url, traces[:2], 1))  # warm-up
        statuses, accepted = asyncio.run(open_loop(server.url, traces, rate, requests))
    return {
        "rate": rate,
        "requests": requests,
        "ok": statuses.count(200) / requests,
        "rejected": statuses.count(429) / requests,
        "server_errors": float(sum(1 for s in statuses if s >= 500)),
        "other": float(sum(1 for s in statuses if s not in (200, 429) and s < 500)),
        "p50_accepted": float(np.percentile(accepted, 50)) if accepted else float("nan"),
    }


def _line(run: Run) -> str:
    p50, p99 = run.percentile(50), run.percentile(99)
    latency = f"p50 {p50:.2f}s p99 {p99:.2f}s" if p50 is not None and p99 is not None else "-"
    return f"{run.name:32s} c={run.concurrency or '-':>3} {run.throughput:6.2f} traces/s  {latency}"


def format_report(
    runs: list[Run], batched: Run, per_trace: Run, overload: dict[str, float], meta: dict[str, str]
) -> str:
    lines = [
        f"{meta['date']}, {meta['machine']}; {meta['traces']} GSM8K rollouts, one trace per request; "
        f"probe threads {meta['threads']}; load average at start {meta['load']}. Engine batched: mean of "
        f"two measurements ({meta['engine_spread']}); ratios use it.",
        "",
        "| run | concurrency | traces/s | p50 latency | p99 latency | vs engine batched "
        "| vs engine per trace | identical to engine per trace |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in [batched, per_trace, *runs]:
        p50, p99 = run.percentile(50), run.percentile(99)
        identical = "-" if run.identical is None else ("yes" if run.identical else "no")
        vs_batched = run.throughput / batched.throughput
        vs_per_trace = run.throughput / per_trace.throughput
        lines.append(
            f"| {run.name} | {run.concurrency or '-'} | {run.throughput:.2f} | "
            f"{f'{p50:.2f} s' if p50 is not None else '-'} | {f'{p99:.2f} s' if p99 is not None else '-'} | "
            f"{vs_batched:.2f} | {vs_per_trace:.2f} | {identical} |"
        )
    lines += [
        "",
        f"2x overload (queue of {OVERLOAD_QUEUE} traces, exact batching): "
        f"{overload['requests']:.0f} requests arriving at {overload['rate']:.2f}/s: "
        f"{overload['ok']:.0%} answered 200 "
        f"(p50 {overload['p50_accepted']:.2f} s), {overload['rejected']:.0%} answered 429, "
        f"{overload['server_errors']:.0f} 5xx, {overload['other']:.0f} other.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_rollouts_option(parser)
    parser.add_argument("--traces", type=int, default=32, help="GSM8K rollouts, spread over the file")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the probe (engine and service)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--no-packed", action="store_true", help="skip the packed-batching service runs")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()

    traces = load_traces(args.rollouts, args.traces)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "traces": str(len(traces)),
        "threads": str(args.threads),
        "load": f"{os.getloadavg()[0]:.1f}",
    }
    engine = Engine(args.threads)
    before = engine.batched_seconds(traces)
    per_trace, singles = engine.per_trace(traces)
    print(_line(per_trace), flush=True)
    runs = measure_service(traces, args.threads, True, args.concurrency, singles)
    if not args.no_packed:
        runs += measure_service(traces, args.threads, False, args.concurrency, singles)
    after = engine.batched_seconds(traces)  # again, after the service runs: the machine's load drifts
    batched = Run("engine: one annotate() call", None, len(traces), (before + after) / 2)
    meta["engine_spread"] = (
        f"{len(traces) / before:.2f} before, {len(traces) / after:.2f} after the service runs"
    )
    print(_line(batched), f"({meta['engine_spread']})", flush=True)
    top = max(args.concurrency)
    rate_at_top = next(r.throughput for r in runs if r.concurrency == top)
    overload = measure_overload(traces, args.threads, 2 * rate_at_top)
    report = format_report(runs, batched, per_trace, overload, meta)
    print()
    print(report)
    at_top = next(r for r in runs if r.concurrency == top)
    share = at_top.throughput / batched.throughput
    print(
        f"\nservice (exact) at concurrency {top}: {share:.0%} of the engine's batched throughput "
        "(target >= 90%)"
    )
    if not args.no_write:
        shown = " ".join(a if not a.startswith(str(ROOT)) else os.path.relpath(a, ROOT) for a in sys.argv[1:])
        from common import write_benchmark_section

        command = f".venv/bin/python bench/service_load.py {shown}".strip()
        write_benchmark_section("Service", f"`{command}`\n\n{report}")
        print(f"written to {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
