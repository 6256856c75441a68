"""GRPO with TRL on the CPU, trained the method's way: `MigGRPOTrainer` and the MIG reward service.

    mig-annotator model prepare                      # once: the converted SmolLM2-135M (probe and policy)
    MIG_AUDIT_DIR=/tmp/mig-audit mig-annotator serve --port 8000 &
    python examples/trl_grpo_cpu.py --service-url http://127.0.0.1:8000

Needs `pip install "mig-annotator[serve]" "trl==1.16.*"` (the service) and TRL. Two optimizer steps on 4
GSM8K prompts, 4 generations each, 24 new tokens: a few minutes on 2 CPU cores. The trainer asks the
service once per batch (each completion is scored once) and trains on per-token advantages,
A_it = process_weight * A^p_it + outcome_weight * A^o_i: the group-normalised outcome on every completion
token, the group-normalised process reward on the chain-of-thought tokens (`--placement`), plus
`--sft-weight` x the token-mean NLL of the completions that are correct with max_k r_k > `--sft-threshold`.
A completion the service cannot score gets advantage 0 (never a penalty); an unreachable service fails
the step. tests/examples/test_trl_grpo_cpu.py runs `main` against a live service.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from trl import GRPOConfig

from mig_annotator.client import MigClient
from mig_annotator.trainer.advantages import AdvantageSettings
from mig_annotator.trainer.trl import MigGRPOTrainer

HERE = Path(__file__).resolve().parent
PROMPTS = HERE.parent / "tests" / "fixtures" / "gsm8k_prompts.jsonl"
POLICY = Path.home() / ".cache" / "mig-annotator" / "models" / "SmolLM2-135M-Instruct"


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Train, print one line per optimizer step, and return TRL's log history."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--service-url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--policy", default=str(POLICY), help="a model path or hub id")
    parser.add_argument("--prompts", default=str(PROMPTS), help="JSONL rows with `prompt` and `answer`")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--output-dir", default="grpo-out")
    parser.add_argument("--placement", choices=["sequence", "step"], default="sequence")
    parser.add_argument("--process-weight", type=float, default=1.0, help="alpha")
    parser.add_argument("--outcome-weight", type=float, default=1.0, help="beta")
    parser.add_argument("--sft-weight", type=float, default=0.1, help="gamma (0: no SFT term)")
    parser.add_argument("--sft-threshold", type=float, default=0.0)
    args = parser.parse_args(argv)

    rows = [json.loads(line) for line in Path(args.prompts).read_text(encoding="utf-8").splitlines()]
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": row["prompt"]}], "answer": row["answer"]} for row in rows]
    )
    advantages = AdvantageSettings(
        placement=args.placement,
        process_weight=args.process_weight,
        outcome_weight=args.outcome_weight,
        sft_weight=args.sft_weight,
        sft_threshold=args.sft_threshold,
    )
    config = GRPOConfig(
        output_dir=args.output_dir,
        use_cpu=True,
        max_steps=args.steps,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=24,
        learning_rate=1e-6,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
    )
    with MigClient(args.service_url, api_key=args.api_key, deadline_s=300) as client:
        client.wait_until_ready()
        trainer = MigGRPOTrainer(
            model=args.policy,
            args=config,
            train_dataset=dataset,
            client=client,
            advantages=advantages,
        )
        trainer.train()
    history = list(trainer.state.log_history)
    for entry in history:
        if "mig/sft_nll" in entry:
            print(
                f"step {entry['step']}: outcome + process {entry['rewards/mig_mixed/mean']:.4f}, "
                f"SFT gate open {entry['mig/sft_gate_open']:.0f}, SFT NLL {entry['mig/sft_nll']:.4f}, "
                f"unscored {entry['mig/unscored']:.0f}"
            )
    return history


if __name__ == "__main__":
    main()
