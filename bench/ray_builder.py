"""Ray builder benchmark: rows/s of `build --engine ray` with 1 and 2 probe actors against `--engine local`
on the same rows, in one run, and the per-row overhead Ray adds (also with a fake probe, so that the model's
time does not hide it).

One Ray instance (2 CPUs) is started first and shared by every Ray run, so its start-up is not counted; each
Ray run's time does include starting its actors and loading their probes (what a build pays). Every Ray
output is checked against the local one (same rows, same rejects).

    .venv/bin/python bench/ray_builder.py --rollouts ../shared/data/gsm8k_rollouts.jsonl --limit 48 \
        --fake-rows 2000 --write
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from common import add_rollouts_option, require_rollouts, write_benchmark_section  # noqa: E402


def fake_probe_factory():
    """The fake probe: the probe layer's when present, else the builder tests' one (no model)."""
    try:
        from mig_annotator.engine.probe.fake import FakeProbe  # type: ignore[import-not-found]
    except ImportError:
        from tests.builder.conftest import FakeProbe
    return FakeProbe


def write_rows(path: Path, rollouts: Path, limit: int) -> Path:
    with rollouts.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()][:limit]
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            keep = ("id", "question", "completion", "reference_answer")
            out.write(json.dumps({key: row[key] for key in keep}) + "\n")
    return path


def synthetic_rows(path: Path, count: int) -> Path:
    from tests.builder.conftest import arithmetic_rows, write_jsonl

    return write_jsonl(path, arithmetic_rows(count, seed=11))


def timed(run) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def same_output(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    from mig_annotator.builder.layout import OutputLayout

    la, lb = OutputLayout(a), OutputLayout(b)
    parts_a, parts_b = la.parts(), lb.parts()
    if [p.name for p in parts_a] != [p.name for p in parts_b]:
        return False
    tables = all(pq.read_table(x).equals(pq.read_table(y)) for x, y in zip(parts_a, parts_b, strict=True))
    return tables and pq.read_table(la.rejects).equals(pq.read_table(lb.rejects))


def measure(label: str, source: Path, identity, open_local, factory, work: Path, args) -> list[dict]:
    from mig_annotator.builder.pipeline import run_build
    from mig_annotator.builder.plan import plan_build
    from mig_annotator.builder.ray_engine import RayOptions, run_ray_build
    from mig_annotator.builder.settings import BuildSettings

    def plan(out: Path):
        settings = BuildSettings(
            inputs=[str(source)],
            out=out,
            shard_rows=args.shard_rows,
            window_rows=args.window_rows,
            group_rows=args.group_rows,
        )
        return plan_build(settings, identity)

    rows = plan(work / f"{label}-probe").total_rows
    local_out = work / f"{label}-local"
    seconds, _ = timed(lambda: run_build(plan(local_out), open_local()))
    results = [
        {"probe": label, "engine": "local", "actors": 1, "rows": rows, "seconds": seconds, "same": "-"}
    ]
    print(results[-1], flush=True)
    for actors in (1, 2):
        out = work / f"{label}-ray-{actors}"
        options = RayOptions(num_probes=actors, actor_resources={"num_cpus": 0.5})
        seconds, _ = timed(lambda out=out, options=options: run_ray_build(plan(out), factory, options))
        same = "yes" if same_output(out, local_out) else "NO"
        results.append(
            {
                "probe": label,
                "engine": "ray",
                "actors": actors,
                "rows": rows,
                "seconds": seconds,
                "same": same,
            }
        )
        print(results[-1], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_rollouts_option(parser)
    parser.add_argument("--limit", type=int, default=48, help="GSM8K rollouts for the real-probe runs")
    parser.add_argument("--fake-rows", type=int, default=2000, help="synthetic rows for the fake-probe runs")
    parser.add_argument("--fake-only", action="store_true", help="skip the real probe")
    parser.add_argument("--shard-rows", type=int, default=1024)
    parser.add_argument("--window-rows", type=int, default=64)
    parser.add_argument("--group-rows", type=int, default=8)
    parser.add_argument("--write", action="store_true", help="write the Ray section of BENCHMARKS.md")
    args = parser.parse_args()

    import ray

    from mig_annotator.engine.probe.registry import expected_identity, open_probe
    from mig_annotator.engine.probe.settings import TransformersProbeSettings

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    results: list[dict] = []
    try:
        fake = fake_probe_factory()
        fake_identity = fake().identity()
        source = synthetic_rows(work / "synthetic.jsonl", args.fake_rows)
        results += measure("fake", source, fake_identity, fake, fake, work, args)
        if not args.fake_only:
            settings = TransformersProbeSettings(threads=1)
            identity = expected_identity(settings)
            factory = functools.partial(open_probe, settings)
            source = write_rows(work / "gsm8k.jsonl", require_rollouts(args.rollouts), args.limit)
            results += measure("SmolLM2-135M", source, identity, factory, factory, work, args)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        "| probe | engine | probe actors | rows | seconds | rows/s | vs local | per-row overhead vs local | "
        "same rows and rejects as local |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    local = {r["probe"]: r for r in results if r["engine"] == "local"}
    for r in results:
        base = local[r["probe"]]
        rate = r["rows"] / r["seconds"]
        overhead = (r["seconds"] - base["seconds"]) / r["rows"] * 1000
        lines.append(
            f"| {r['probe']} | {r['engine']} | {r['actors']} | {r['rows']} | {r['seconds']:.1f} | "
            f"{rate:.2f} | "
            f"{rate / (base['rows'] / base['seconds']):.2f} | "
            f"{'-' if r['engine'] == 'local' else f'{overhead:+.1f} ms'} | {r['same']} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.write:
        command = " ".join(["python bench/ray_builder.py", *sys.argv[1:]])
        machine = (
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared); one local Ray instance of 2 CPUs"
        )
        write_benchmark_section("Ray builder", f"`{command}`\n\n{machine}.\n\n{table}")


if __name__ == "__main__":
    main()
