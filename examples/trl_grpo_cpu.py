"""GRPO with TRL on the CPU, rewarded by the MIG service: the run `tests/trainers/test_trl_grpo.py` checks.

    mig-annotator model prepare                      # once: the converted SmolLM2-135M (probe and policy)
    MIG_AUDIT_DIR=/tmp/mig-audit mig-annotator serve --port 8000 &
    python examples/trl_grpo_cpu.py --service-url http://127.0.0.1:8000

Needs `pip install "mig-annotator[serve]" "trl==1.16.*"` (the service) and TRL; the reward function itself
needs only the base install. Two optimizer steps on 4 GSM8K prompts, 4 generations each, 24 new tokens:
about two minutes on 2 CPU cores. The sync reward function gives the mixed reward (outcome + process),
the async one the outcome; a completion the service cannot score gets 0.0 and is counted, and with
--fallback-when-down an unreachable service gives every completion 0.0 instead of failing the step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from mig_annotator.client import MigClient
from mig_annotator.client.fallback import RewardFallback
from mig_annotator.client.trl import async_trl_reward_function, trl_reward_function

HERE = Path(__file__).resolve().parent
PROMPTS = HERE.parent / "tests" / "fixtures" / "gsm8k_prompts.jsonl"
POLICY = Path.home() / ".cache" / "mig-annotator" / "models" / "SmolLM2-135M-Instruct"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--service-url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--policy", default=str(POLICY), help="a model path or hub id")
    parser.add_argument("--prompts", default=str(PROMPTS), help="JSONL rows with `prompt` and `answer`")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--output-dir", default="grpo-out")
    parser.add_argument("--fallback-when-down", action="store_true")
    args = parser.parse_args()

    rows = [json.loads(line) for line in Path(args.prompts).read_text(encoding="utf-8").splitlines()]
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": row["prompt"]}], "answer": row["answer"]} for row in rows]
    )
    on_down = "fallback" if args.fallback_when_down else "raise"
    client = MigClient(args.service_url, api_key=args.api_key, deadline_s=300)
    client.wait_until_ready()
    mixed = trl_reward_function(client, reward="mixed", fallback=RewardFallback(0.0, on_down))
    outcome = async_trl_reward_function(
        reward="outcome",
        fallback=RewardFallback(0.0, on_down),
        client_options={"base_url": args.service_url, "api_key": args.api_key, "deadline_s": 300},
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
    trainer = GRPOTrainer(
        model=args.policy, reward_funcs=[mixed, outcome], args=config, train_dataset=dataset
    )
    trainer.train()
    for entry in trainer.state.log_history:
        if "rewards/mig_mixed/mean" in entry:
            print(
                f"step {entry['step']}: mixed {entry['rewards/mig_mixed/mean']:.4f}, "
                f"outcome {entry['rewards/mig_outcome_async/mean']:.4f}"
            )
    print("fallbacks:", mixed.fallback.stats(), outcome.fallback.stats())  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
