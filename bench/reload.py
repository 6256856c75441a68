"""Following the policy, measured: checkpoint reloads into a running probe, and the in-process policy
probe's share of a TRL step.

    PYTHONPATH=. OMP_NUM_THREADS=2 python bench/reload.py [--trl-steps 2] [--skip-1b] [--skip-trl]

1. **Reload** (``mig.probe.reload``: check + load next to the running weights, then the in-place swap under
   the scoring lock) for SmolLM2-135M (the prepared folder, float32) and a 1B-shaped Llama with random
   weights (``LlamaConfig`` hidden 2048, 16 layers, MLP 8192, 32 heads / 8 KV heads, vocab SmolLM2's 49,152:
   about 1.1B parameters; saved and probed in bfloat16 to halve the disk and memory), each reloaded from a
   second folder holding other weights. Baselines, same run: a fresh probe opened on that folder (weights
   memory-mapped, not yet read), and the same plus the service's warm-up annotation (what a restart pays
   before it serves: the first forward pass reads the weights in). Best of ``--runs``; the folders were
   just written, so their files are in the page cache (no disk reads in either).
2. **The policy probe per TRL step**: ``MigGRPOTrainer(probe="policy")`` on the tests' CPU GRPO run
   (SmolLM2-135M as the policy, 8 completions of 24 tokens a step); the scoring call (``_score``) and each
   optimizer step are timed; the share is scoring time / step time.

Prints a Markdown table per part, with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.model_store import resolve_model_path
from mig_annotator.engine.probe.reload import stage_reload
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from mig_annotator.schemas import Trace

WARM_UP = Trace(id="warm-up", question="1 + 1?", steps=["1 + 1 = 2."], reference_answer="2")


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _copy_tokenizer(source: Path, target: Path) -> None:
    for path in source.iterdir():
        if path.is_file() and path.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab")):
            shutil.copy2(path, target / path.name)


def _other_weights(source: Path, target: Path, dtype: str, seed: int) -> Path:
    """``source``'s model with every weight perturbed, saved to ``target`` with ``source``'s tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 1e-3)
    model.save_pretrained(target)
    _copy_tokenizer(source, target)
    return target


def _random_1b(source_tokenizer: Path, target: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(target)
    _copy_tokenizer(source_tokenizer, target)
    return target


def _parameters(probe: TransformersProbe) -> int:
    return sum(p.numel() for p in probe._model.parameters())


def time_reload(name: str, first: Path, second: Path, dtype: str, runs: int) -> dict[str, Any]:
    settings = TransformersProbeSettings(model=str(first), dtype=dtype, threads=os.cpu_count() or 1)
    fresh, warm = [], []
    for _ in range(runs):
        started = time.perf_counter()
        probe = TransformersProbe(settings.model_copy(update={"model": str(second)}))
        probe.identity()  # the content digest, as the service computes it at start-up
        fresh.append(time.perf_counter() - started)
        with Annotator(probe) as annotator:  # the service's warm-up (service/runtime.py, _warm_up)
            annotator.annotate_many([WARM_UP])
        warm.append(time.perf_counter() - started)
        parameters = _parameters(probe)
        probe.close()
        del probe
    probe = TransformersProbe(settings)
    probe.identity()
    stages, swaps = [], []
    for run in range(runs):
        folder = second if run % 2 == 0 else first  # always other weights than those running
        started = time.perf_counter()
        staged = stage_reload(probe, folder)
        checked = time.perf_counter()
        staged.apply()
        stages.append(checked - started)
        swaps.append(time.perf_counter() - checked)
    probe.close()
    return {
        "name": name,
        "parameters": parameters,
        "dtype": dtype,
        "fresh": min(fresh),
        "warm": min(warm),
        "stage": min(stages),
        "swap": min(swaps),
        "swaps": swaps,
    }


def reload_rows(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    smol = resolve_model_path(None)
    rows = [
        time_reload(
            "SmolLM2-135M-Instruct",
            smol,
            _other_weights(smol, root / "smol-b", "float32", seed=1),
            "float32",
            args.runs,
        )
    ]
    if not args.skip_1b:
        first = _random_1b(smol, root / "llama-1b-a")
        second = _other_weights(first, root / "llama-1b-b", "bfloat16", seed=2)
        rows.append(time_reload("Llama 1B-shaped, random", first, second, "bfloat16", args.runs))
    return rows


def trl_rows(steps: int, root: Path) -> dict[str, Any]:
    from transformers import TrainerCallback

    from mig_annotator.trainer.advantages import AdvantageSettings
    from mig_annotator.trainer.trl import MigGRPOTrainer
    from tests.trainers.support import cpu_grpo_config, gate_open_dataset

    scoring: list[float] = []
    step_times: list[float] = []

    class Timed(MigGRPOTrainer):
        def _score(self, traces: Any) -> list[Any]:
            started = time.perf_counter()
            try:
                return super()._score(traces)
            finally:
                scoring.append(time.perf_counter() - started)

    class StepClock(TrainerCallback):  # type: ignore[misc]
        started = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            StepClock.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            step_times.append(time.perf_counter() - StepClock.started)

    trainer = Timed(
        model=str(resolve_model_path(None)),
        args=cpu_grpo_config(root / "grpo", steps),
        train_dataset=gate_open_dataset(),
        probe="policy",
        advantages=AdvantageSettings(sft_weight=0.1),
        callbacks=[StepClock()],
    )
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    return {"scoring": scoring, "steps": step_times, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trl-steps", type=int, default=2)
    parser.add_argument("--skip-1b", action="store_true")
    parser.add_argument("--skip-trl", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="mig-reload-bench-") as tmp:
        root = Path(tmp)
        print(f"load average at start: {_load()}; {os.cpu_count()} CPUs")
        print(
            "\n| probe | parameters | dtype | fresh open | fresh open + warm-up (baseline) | reload: stage | "
            "reload: swap | stage + swap | reload / baseline |"
        )
        print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in reload_rows(args, root):
            total = row["stage"] + row["swap"]
            cells = [row["name"], f"{row['parameters'] / 1e6:,.0f}M", row["dtype"], f"{row['fresh']:.2f} s"]
            cells += [f"{row[key]:.2f} s" for key in ("warm", "stage", "swap")] + [f"{total:.2f} s"]
            print("| " + " | ".join([*cells, f"{total / row['warm']:.2f}"]) + " |")
            print(f"<!-- swaps per run: {', '.join(f'{s:.2f}' for s in row['swaps'])} -->")
        print(f"\nload average after the reloads: {_load()}")
        if not args.skip_trl:
            timed = trl_rows(args.trl_steps, root)
            print("\n| TRL step | step | scoring (policy probe) | share |")
            print("| ---: | ---: | ---: | ---: |")
            for i, (step, score) in enumerate(zip(timed["steps"], timed["scoring"], strict=False)):
                print(f"| {i + 1} | {step:.2f} s | {score:.2f} s | {score / step:.0%} |")
            total_step, total_score = sum(timed["steps"]), sum(timed["scoring"][: len(timed["steps"])])
            print(f"| all | {total_step:.2f} s | {total_score:.2f} s | {total_score / total_step:.0%} |")
            print(f"\ntrain() wall {timed['wall']:.1f} s; load average after: {_load()}")


if __name__ == "__main__":
    main()
