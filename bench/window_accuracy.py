"""How far context_limit="window" is from exact scoring, on traces that fit the probe's real context.

Every trace is scored exactly (the probe's full 8,192-token context), then again under
``context_limit="window"`` with the probe wrapped to a smaller context limit, so that the later prefixes are
read as question + most recent step tokens + answer. For the steps scored on a window it reports max and
mean |v_window - v_exact| (natural-log units, mean log-prob per answer token), the mean |difference| of the
trace's process reward, and the tokens forwarded against exact scoring. Steps whose prefix fits are exact
by construction and left out of the |dv| statistics.

    .venv/bin/python bench/window_accuracy.py --limit 60 --write
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import add_rollouts_option, require_rollouts, spread_gsm8k_traces, write_benchmark_section  # noqa: E402
from engine_speed import long_trace  # noqa: E402


class ContextLimited:
    """A probe seen through a smaller context limit (the model, tokenizer and scores are the real ones)."""

    def __init__(self, inner, context_limit: int) -> None:
        self._inner = inner
        self.context_limit = context_limit
        self.model_id = inner.model_id
        self.tokenizer = inner.tokenizer
        self.stats = inner.stats
        self.identity = inner.identity

    def score(self, sequences: Sequence) -> list:
        assert all(s.probe_length <= self.context_limit for s in sequences)
        return self._inner.score(sequences)


class StringVerifier:
    """Outcome by plain string equality: outcomes play no part in this comparison, and no worker starts."""

    def check_many(
        self, pairs: Sequence[tuple[str | None, str]], *, deadline: float | None = None
    ) -> list[int]:
        return [
            int(answer is not None and answer.strip() == reference.strip()) for answer, reference in pairs
        ]

    def close(self) -> None:
        pass


def compare(probe, workload: str, traces: list, limits: list[int]) -> list[dict]:
    from mig_annotator.engine.annotator import Annotator, TraceError
    from mig_annotator.schemas import ScoringConfig

    verifier = StringVerifier()
    exact = Annotator(probe, verifier=verifier).annotate(traces)
    exact_by_id = {annotation.trace_id: annotation for annotation in exact}
    exact_tokens = sum(annotation.tokens_forwarded for annotation in exact)
    rows = []
    for limit in limits:
        started = time.perf_counter()
        results = Annotator(ContextLimited(probe, limit), verifier=verifier).annotate_many(
            traces, ScoringConfig(context_limit="window")
        )
        seconds = time.perf_counter() - started
        scored = [result for result in results if not isinstance(result, TraceError)]
        windowed = [annotation for annotation in scored if annotation.windowed_steps > 0]
        dv: list[float] = []
        dreward: list[float] = []
        for annotation in windowed:
            reference = exact_by_id[annotation.trace_id]
            first = len(annotation.steps) - annotation.windowed_steps
            dv += [
                abs(step.v - ref.v)
                for step, ref in zip(annotation.steps[first:], reference.steps[first:], strict=True)
            ]
            dreward.append(abs(annotation.process_reward - reference.process_reward))
        steps = sum(len(annotation.steps) for annotation in scored)
        scored_ids = {annotation.trace_id for annotation in scored}
        rows.append(
            {
                "workload": workload,
                "limit": limit,
                "traces": len(traces),
                "refused": len(results) - len(scored),
                "windowed_traces": len(windowed),
                "windowed_steps": f"{len(dv)}/{steps}",
                "max_dv": max(dv, default=0.0),
                "mean_dv": sum(dv) / len(dv) if dv else 0.0,
                "mean_dreward": sum(dreward) / len(dreward) if dreward else 0.0,
                "tokens_vs_exact": sum(a.tokens_forwarded for a in scored)
                / sum(exact_by_id[i].tokens_forwarded for i in scored_ids),
                "seconds": seconds,
                "exact_tokens": exact_tokens,
            }
        )
        print(rows[-1], flush=True)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| workload | window limit | traces (refused) | windowed traces | windowed steps / steps "
        "| max abs dv | mean abs dv | mean abs d process_reward | tokens vs exact | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['limit']} | {r['traces']} ({r['refused']}) | {r['windowed_traces']} "
            f"| {r['windowed_steps']} | {r['max_dv']:.4f} | {r['mean_dv']:.4f} | {r['mean_dreward']:.4f} "
            f"| {r['tokens_vs_exact']:.2f}x | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_rollouts_option(parser)
    parser.add_argument("--limit", type=int, default=60, help="GSM8K rollouts, spread over the file")
    parser.add_argument("--gsm8k-windows", type=int, nargs="*", default=[160, 224])
    parser.add_argument("--long-windows", type=int, nargs="*", default=[2048])
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()

    from mig_annotator.engine.model_store import resolve_model_path
    from mig_annotator.engine.probe.settings import TransformersProbeSettings
    from mig_annotator.engine.probe.transformers_probe import TransformersProbe

    probe = TransformersProbe(TransformersProbeSettings(model_path=resolve_model_path(None), mode="packed"))
    rows: list[dict] = []
    if args.gsm8k_windows:
        traces = spread_gsm8k_traces(require_rollouts(args.rollouts), args.limit)
        rows += compare(probe, "gsm8k", traces, args.gsm8k_windows)
        report(probe, args, rows)
    if args.long_windows:
        rows += compare(probe, "long (4,154 tokens)", long_trace(), args.long_windows)
        report(probe, args, rows)


def report(probe, args: argparse.Namespace, rows: list[dict]) -> None:
    """Print the table of the rows so far and, with --write, put it into BENCHMARKS.md (a partial run too)."""
    import torch

    table = format_table(rows)
    print(table, flush=True)
    if args.write:
        command = "python bench/window_accuracy.py " + " ".join(sys.argv[1:])
        body = (
            f"`{command}`\n\n"
            f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, fp32, "
            f"{probe.model_id}, packed probe; GSM8K: {args.limit} rollouts spread over the file; long: the "
            "synthetic 32-step trace of bench/engine_speed.py. "
            "Exact = every prefix in the probe's 8,192-token "
            'context; window = `context_limit="window"` with the probe wrapped to the limit shown, so each '
            "prefix over it reads the question header, only its most recent step tokens, then the answer "
            "prompt and answer. dv = v_window - v_exact (mean answer-token log-prob, nats) over the windowed "
            "steps only (the others are exact by construction); d process_reward over the windowed traces. "
            "Refused: traces whose question header and answer alone exceed the limit (a TraceError).\n\n"
            + table
        )
        write_benchmark_section("Window context policy (accuracy)", body)


if __name__ == "__main__":
    main()
