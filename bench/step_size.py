"""The reward path at a GRPO step's size: one batch through ``AsyncMigClient`` against one and two
``mig-annotator serve`` replicas, each row against the engine in process on the same traces, same run.

Rows (``--sizes``, ``--batches``):

* fake probe (the CPU-side ceiling: no model work): 1,024 and 8,192 traces of GSM8K rollouts (the shared
  data, cycled; generated ones of the same shape when absent) and of long chains of thought (the
  long-context fixture's ``<think>`` prose, about 1,800 tokens each), against 1 and 2 replicas;
* real probe (SmolLM2, default settings, one torch thread each side): ``--real-size`` (32) GSM8K traces
  against 1 replica (kept small: a CPU forwards a few hundred tokens a second).

Each service runs with default settings (audit log on, in a temporary folder); the client is
``AsyncMigClient(urls)`` with default settings. Per row: traces/s of the engine in process
(``Annotator.annotate_many`` over the whole batch, its own answer-check workers), traces/s through the
service(s), their ratio, the services' CPU seconds per trace (every serve process and its answer-check
workers, from psutil, over the batch), and the requests' HTTP statuses (413s must be none). The
annotations of both paths must agree (outcome and process reward) trace by trace.

    OMP_NUM_THREADS=1 .venv/bin/python bench/step_size.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mig_annotator.cli.serve_process import ServeProcess  # noqa: E402
from mig_annotator.client import AsyncMigClient  # noqa: E402
from mig_annotator.engine.annotator import Annotator  # noqa: E402
from mig_annotator.engine.probe import FakeProbeSettings, TransformersProbeSettings, open_probe  # noqa: E402
from mig_annotator.engine.verify import ProcessVerifier  # noqa: E402
from mig_annotator.schemas import Trace, TraceAnnotation  # noqa: E402
from tests.client.step_batches import generated_gsm8k, long_cot, shared_gsm8k  # noqa: E402


@dataclass(frozen=True)
class Row:
    probe: str
    batch: str
    traces: int
    replicas: int
    engine_tps: float
    service_tps: float
    service_cpu_per_trace: float
    statuses: str

    @property
    def ratio(self) -> float:
        return self.service_tps / self.engine_tps


def _batch(name: str, size: int) -> list[Trace]:
    if name == "gsm8k":
        return shared_gsm8k(size) or generated_gsm8k(size)
    base = long_cot(min(size, 512))
    return [base[i % len(base)].model_copy(update={"id": f"long-cot-{i}"}) for i in range(size)]


def _engine_tps(probe_settings: FakeProbeSettings | TransformersProbeSettings, traces: list[Trace]) -> tuple:
    probe = open_probe(probe_settings)
    verifier = ProcessVerifier(workers=2)
    verifier.start()
    try:
        with Annotator(probe, verifier=verifier) as annotator:
            annotator.annotate_many(traces[:4])  # warm up
            started = time.perf_counter()
            results = annotator.annotate_many(traces)
            seconds = time.perf_counter() - started
    finally:
        verifier.close()
        probe.close()
    return len(traces) / seconds, results


def _cpu_seconds(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        process = psutil.Process(pid)
        for member in (process, *process.children(recursive=True)):
            try:
                times = member.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


async def _through_service(urls: list[str], traces: list[Trace]) -> tuple[float, list, Counter]:
    statuses: Counter = Counter()

    async def record(response: httpx.Response) -> None:
        if response.request.url.path == "/v1/annotate":
            statuses[response.status_code] += 1

    http = httpx.AsyncClient(timeout=600, event_hooks={"response": [record]})
    async with AsyncMigClient(urls, http_client=http) as client:
        await client.annotate_results(traces[:4])  # warm up (and read the limits)
        statuses.clear()
        started = time.perf_counter()
        results = await client.annotate_results(traces)
        return time.perf_counter() - started, results, statuses


def _run_row(probe: str, batch: str, traces: list[Trace], servers: list[ServeProcess], engine: tuple) -> Row:
    engine_tps, engine_results = engine
    pids = [server.process.pid for server in servers if server.process is not None]
    cpu_before = _cpu_seconds(pids)
    seconds, results, statuses = asyncio.run(_through_service([s.url for s in servers], traces))
    cpu = _cpu_seconds(pids) - cpu_before
    for mine, theirs in zip(results, engine_results, strict=True):
        if not isinstance(mine, TraceAnnotation) or not isinstance(theirs, TraceAnnotation):
            raise RuntimeError(f"a trace was not annotated: {mine!r} / {theirs!r}")
        if mine.outcome != theirs.outcome or abs(mine.process_reward - theirs.process_reward) > 1e-4:
            raise RuntimeError(f"trace {mine.trace_id}: service and engine disagree")
    return Row(
        probe=probe,
        batch=batch,
        traces=len(traces),
        replicas=len(servers),
        engine_tps=engine_tps,
        service_tps=len(traces) / seconds,
        service_cpu_per_trace=cpu / len(traces),
        statuses=", ".join(f"{count} x {status}" for status, count in sorted(statuses.items())),
    )


def _servers(count: int, env: dict[str, str], args: list[str], audit: Path) -> list[ServeProcess]:
    return [
        ServeProcess(
            args=args,
            env={**env, "MIG_AUDIT_DIR": str(audit / f"replica-{index}"), "MIG_LOG_LEVEL": "warning"},
            cwd=ROOT,
            ready_timeout_s=600,
            stop_grace_s=30,
        )
        for index in range(count)
    ]


def _real_probe_row(size: int, env: dict[str, str], audit: Path) -> Row:
    import torch

    torch.set_num_threads(1)
    traces = _batch("gsm8k", size)
    with _servers(1, {**env, "MIG_PROBE__THREADS": "1"}, [], audit / "real")[0] as server:
        engine = _engine_tps(TransformersProbeSettings(threads=1), traces)
        return _run_row("SmolLM2-135M", "gsm8k", traces, [server], engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="1024,8192", help="batch sizes with the fake probe (empty: the real probe only)"
    )
    parser.add_argument("--batches", default="gsm8k,long-cot", help="gsm8k and/or long-cot")
    parser.add_argument("--replicas", default="1,2", help="replica counts with the fake probe")
    parser.add_argument(
        "--real-size", type=int, default=32, help="GSM8K traces with the real probe (0: none)"
    )
    options = parser.parse_args()
    load_before = os.getloadavg()
    rows: list[Row] = []
    env = {"PYTHONPATH": str(ROOT)}
    sizes = [int(value) for value in options.sizes.split(",") if value]
    replica_counts = [int(value) for value in options.replicas.split(",")]
    with tempfile.TemporaryDirectory(prefix="mig-bench-step-") as folder, ExitStack() as running:
        audit = Path(folder)
        if options.real_size and not sizes:
            rows.append(_real_probe_row(options.real_size, env, audit))
            print(_line(rows[-1]), flush=True)
        fake = _servers(max(replica_counts) if sizes else 0, env, ["--backend", "fake"], audit / "fake")
        for server in fake:
            running.enter_context(server)
        # the smallest size first (every batch and replica count), then the real probe, then larger sizes
        for position, size in enumerate(sizes):
            for batch in options.batches.split(","):
                traces = _batch(batch, size)
                for replicas in replica_counts:
                    engine = _engine_tps(FakeProbeSettings(), traces)
                    rows.append(_run_row("fake", batch, traces, fake[:replicas], engine))
                    print(_line(rows[-1]), flush=True)
            if position == 0 and options.real_size:
                rows.append(_real_probe_row(options.real_size, env, audit))
                print(_line(rows[-1]), flush=True)
    print()
    print(_table(rows))
    load_after = os.getloadavg()
    print(
        f"\n{psutil.cpu_count()} CPUs; load average (1, 5, 15 min) before {_load(load_before)}, "
        f"after {_load(load_after)}"
    )


def _line(row: Row) -> str:
    return (
        f"{row.probe} {row.batch} {row.traces} x{row.replicas}: engine {_rate(row.engine_tps)}/s, "
        f"service {_rate(row.service_tps)}/s ({row.ratio:.2f}), "
        f"{row.service_cpu_per_trace * 1000:.1f} ms CPU a trace, {row.statuses}"
    )


def _table(rows: Sequence[Row]) -> str:
    lines = [
        "| probe | batch | traces | replicas | engine in process (traces/s) | service (traces/s) | "
        "service / engine | service CPU ms / trace | requests |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.probe} | {row.batch} | {row.traces:,} | {row.replicas} | {_rate(row.engine_tps)} | "
            f"{_rate(row.service_tps)} | {row.ratio:.2f} | {row.service_cpu_per_trace * 1000:.1f} | "
            f"{row.statuses} |"
        )
    return "\n".join(lines)


def _rate(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


def _load(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


if __name__ == "__main__":
    main()
