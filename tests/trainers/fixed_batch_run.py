"""One MigGRPOTrainer step on a fixed global batch, in one process or under ``accelerate launch``.

    accelerate launch --multi_gpu --num_processes 2 tests/trainers/fixed_batch_run.py OUT_DIR MODEL

The batch is fixed (TRL's ``rollout_func`` returns the same four completions of one prompt whatever the
process count: member j of the group gets COMPLETIONS[j]), so one process with 4 rows and two processes
with 2 rows each train on the same global batch; the group straddles the processes. The probe is the policy
in process (each process scores its own rows). Each process writes ``OUT_DIR/rank-R.json``: its rows'
per-token advantages and SFT gates, and TRL's logged history.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PROMPT = "Q: What is 5 + 1?\nA: 5 + 1 = 6.\nThe answer is 6.\n\nQ: What is 3 + 4?\nA:"
ANSWER = "7"
COMPLETIONS = [
    " 3 + 4 = 7.\nThe answer is 7.",
    " 3 + 4 = 8.\nThe answer is 8.",
    " The answer is 7.",
    " 4 + 3 = 6.\nThe answer is 6.",
]
GROUP = len(COMPLETIONS)


def main(out_dir: Path, model: str) -> None:
    from datasets import Dataset
    from trl import GRPOConfig

    from mig_annotator.trainer.advantages import AdvantageSettings
    from mig_annotator.trainer.trl import MigGRPOTrainer

    def fixed_rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        tokenizer = trainer.processing_class
        first = trainer.accelerator.process_index * len(prompts)
        completions = [COMPLETIONS[(first + row) % GROUP] for row in range(len(prompts))]
        return {
            "prompt_ids": [tokenizer(prompt).input_ids for prompt in prompts],
            "completion_ids": [[*tokenizer(text).input_ids, tokenizer.eos_token_id] for text in completions],
            "logprobs": None,
        }

    processes = int(__import__("os").environ.get("WORLD_SIZE", "1"))
    config = GRPOConfig(
        output_dir=str(out_dir / "grpo"),
        use_cpu=True,
        bf16=False,  # TRL's default bf16 autocast runs the CPU's backward through a slow bf16 matmul
        max_steps=1,
        per_device_train_batch_size=GROUP // processes,
        num_generations=GROUP,
        max_completion_length=16,
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
    )
    trainer = MigGRPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list([{"prompt": PROMPT, "answer": ANSWER}]),
        probe="policy",
        advantages=AdvantageSettings(sft_weight=0.5),
        rollout_func=fixed_rollout,
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    (advantages,) = trainer.mig_used_advantages
    record = {
        "advantages": advantages.tolist(),
        "gates": trainer.mig_used_gates[0],
        "history": trainer.state.log_history,
    }
    (out_dir / f"rank-{rank}.json").write_text(json.dumps(record), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
