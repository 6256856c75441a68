"""The probe tokens one GRPO step needs, from the engine's own plan, against this machine's probe rate.

A GRPO step of Q questions x G completions: the shared GSM8K rollouts (``--rollouts``; groups of 4 real
rollouts per question, pooled to 8 or 16 as ``bench/grpo_groups.py`` does) and synthetic long chains of
thought (the long-context fixture's ``<think>`` prose, ``--long-tokens`` each). For each batch the engine
plans every trace (segmentation and tokenisation, no probe work) and the table gives:

- the completion tokens the policy generated (counted with the probe's tokenizer);
- the probe tokens the packed probe forwards at the least, ungrouped and with the group's question shared;
- the seconds those tokens take at the default probe's plain-forward rate, measured in the same run over the
  batch's own sequence shapes (so the figure is "one plain forward of this much text", the engine's
  long-trace speed being about 1.0 of it, BENCHMARKS.md).

Usage::

    .venv/bin/python bench/step_probe_tokens.py [--questions 64] [--per-question 8] [--write]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    add_rollouts_option,
    grpo_groups,
    question_rollouts,
    require_rollouts,
    write_benchmark_section,
)
from engine_speed import plain_forward_rate
from long_cot import long_cot_traces

sys.path.insert(0, str(ROOT))


def batch_row(name: str, annotator, traces: list, groups: int, probe) -> dict:
    from mig_annotator.engine.annotator import PreparedTrace
    from mig_annotator.engine.probe.groups import grouped_minimal_tokens

    planned = [item for item in annotator.plan(traces) if isinstance(item, PreparedTrace)]
    sequences = [item.sequence for item in planned]
    completion_tokens = sum(len(annotator.probe.tokenizer(t.completion or "")["input_ids"]) for t in traces)
    ungrouped = grouped_minimal_tokens(sequences, enabled=False)
    grouped = grouped_minimal_tokens(sequences)
    rate = plain_forward_rate(probe, sequences, ungrouped)
    return {
        "batch": name,
        "traces": len(planned),
        "groups": groups,
        "completion": completion_tokens,
        "ungrouped": ungrouped,
        "grouped": grouped,
        "rate": rate,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| batch | traces | completion tokens (policy) | probe tokens, ungrouped | probe tokens, grouped "
        "| probe / completion | plain-forward tok/s here | seconds here (grouped) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch']} | {row['traces']:,} | {row['completion']:,} | {row['ungrouped']:,} "
            f"| {row['grouped']:,} | {row['grouped'] / row['completion']:.2f} | {row['rate']:,.0f} "
            f"| {row['grouped'] / row['rate']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_rollouts_option(parser)
    parser.add_argument("--questions", type=int, default=64, help="questions in the GSM8K step")
    parser.add_argument("--per-question", type=int, default=8, choices=(4, 8, 16), help="completions a group")
    parser.add_argument("--long-traces", type=int, default=64, help="long-CoT traces in the second batch")
    parser.add_argument("--long-tokens", type=int, default=1800, help="tokens of each long <think> block")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    rollouts = require_rollouts(args.rollouts)

    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe import TransformersProbeSettings, open_probe

    probe = open_probe(TransformersProbeSettings())
    pooled = args.per_question // 4
    groups = grpo_groups(question_rollouts(rollouts, args.questions * pooled), args.per_question)
    gsm8k = [trace for group in groups for trace in group]
    long = long_cot_traces(probe.tokenizer, args.long_traces, args.long_tokens)
    with Annotator(probe) as annotator:
        rows = [
            batch_row(
                f"GSM8K, {len(groups)} questions x {args.per_question}", annotator, gsm8k, len(groups), probe
            ),
            batch_row(f"long CoT (~{args.long_tokens} tokens), ungrouped", annotator, long, len(long), probe),
        ]
    load = os.getloadavg()
    text = table(rows)
    print(text)
    print(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    if args.write:
        command = (
            f"`.venv/bin/python bench/step_probe_tokens.py --questions {args.questions} "
            f"--per-question {args.per_question} --long-traces {args.long_traces} "
            f"--long-tokens {args.long_tokens} --write`"
        )
        write_benchmark_section(
            "Probe tokens one GRPO step needs",
            f"{command} (default probe SmolLM2-135M, fp32, this 2-core CPU; load average "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end).\n\n{text}\n\n"
            "Probe tokens are what the packed probe forwards at the least (every prefix of a trace read "
            "once, plus the answer copies); grouped: the question forwarded once per GRPO group. Seconds "
            "here: those tokens at this machine's plain-forward rate, measured in the same run. A probe on "
            "a GPU forwards orders of magnitude more tokens a second; `bench/gpu_check.sh` measures it when "
            "a device is lent.",
        )


if __name__ == "__main__":
    main()
