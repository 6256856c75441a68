"""Run the experiment: every arm x seed through the real TRL trainer, held-out accuracy along the way.

    export PYTHONPATH=$PWD HF_HUB_OFFLINE=1
    python experiments/mig_vs_grpo/run.py --out outputs/mig_vs_grpo/run        # the full, pre-registered run
    python experiments/mig_vs_grpo/run.py --quick --out /tmp/mig-quick              # the plumbing check

The SFT checkpoint (``config.sft``) is trained first into ``OUT/sft`` unless it is there. Then
``config.workers`` processes (torch one thread each) take the (arm, seed) runs; a run writes
``OUT/runs/ARM/seedS/eval.jsonl`` (one line per evaluation point) and, when finished, ``done.json``: a run
with ``done.json`` is not run again (resumable; an unfinished run starts over). ``--quick``: 3 steps, the
first seed, 16 held-out problems, and per arm a check that the advantages it trained on are the ones its
config names (``checks.json``; the command fails if one does not hold).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import experiment_config as config_module  # the folder is package-free
import policy
import task
from experiment_config import ExperimentConfig


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / arm / f"seed{seed}"


def ensure_sft(config: ExperimentConfig, out: Path) -> Path:
    folder = out / "sft"
    if not (folder / "pretrain_figures.json").exists():
        import torch

        torch.set_num_threads(1)
        sft = config.sft
        print(f"SFT checkpoint: pretraining into {folder}", flush=True)
        policy.pretrain(folder, steps=sft.steps, corrupted_share=sft.corrupted_share, seed=sft.seed)
    return folder


def _steps_of(completion: str) -> int:
    """The chain's step count: the non-blank lines before the answer line (all of them if none)."""
    lines = [line for line in completion.strip().splitlines() if line.strip()]
    while lines and lines[-1].strip().startswith("A:"):
        lines.pop()
    return len(lines)


class Evaluator:
    """Held-out accuracy of the live model on a fixed set, with a fixed sampling seed, the trainer's RNG
    state left as it was."""

    def __init__(self, config: ExperimentConfig, sft: Path) -> None:
        from transformers import AutoTokenizer

        self.spec = config.eval
        self.max_new_tokens = config.training.max_completion_length
        self.problems = task.problems("held_out", self.spec.n_problems, seed=self.spec.problems_seed)
        self.tokenizer = AutoTokenizer.from_pretrained(str(sft))  # its own: TRL's keeps its padding side

    def __call__(self, model: Any) -> dict[str, float]:
        import torch

        devices = [model.device.index or 0] if model.device.type == "cuda" else []
        was_training = model.training
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.spec.sample_seed)
            completions = policy.sample_completions(
                model,
                self.tokenizer,
                [p.question for p in self.problems],
                sample=self.spec.metric == "sampled",
                max_new_tokens=self.max_new_tokens,
            )
        model.train(was_training)
        right = [task.parse_answer(c) == p.answer for c, p in zip(completions, self.problems, strict=True)]
        lengths = [len(self.tokenizer.encode(c, add_special_tokens=False)) for c in completions]
        return {
            "accuracy": sum(right) / len(right),
            "mean_completion_tokens": sum(lengths) / len(lengths),
            "mean_step_count": sum(_steps_of(c) for c in completions) / len(completions),
        }


def _batch_stats(batches: list[Any]) -> dict[str, float]:
    """Advantage and reward statistics over the generation batches since the last evaluation point."""
    import torch

    if not batches:
        return {}
    trained, zero_rows, rows, outcomes, lengths, gates, scoring = [], 0, 0, [], [], [], 0.0
    disagreements = 0  # the engine's outcome (what the probe arms train on) vs the task's grading
    for batch in batches:
        mask = batch.completion_mask.bool()
        adv = batch.advantages
        per_token = adv if adv.dim() == 2 else adv[:, None].expand_as(mask)
        trained.append(per_token[mask])
        zero_rows += int(((per_token * mask).abs().sum(dim=1) == 0).sum())
        rows += mask.size(0)
        outcomes.extend(batch.outcomes)
        lengths.extend(mask.sum(dim=1).tolist())
        gates.extend(batch.gates or [])
        scoring += batch.scoring_s
        for annotation, outcome in zip(batch.annotations or [], batch.outcomes, strict=False):
            disagreements += int(annotation is not None and float(annotation.outcome) != outcome)
    values = torch.cat(trained).double()
    return {
        "train_accuracy": sum(outcomes) / max(1, len(outcomes)),
        "train_completion_tokens": sum(lengths) / max(1, len(lengths)),
        "adv_abs_mean": float(values.abs().mean()),
        "adv_std": float(values.std()) if values.numel() > 1 else 0.0,
        "adv_zero_completion_share": zero_rows / max(1, rows),
        "sft_gate_open_share": sum(gates) / len(gates) if gates else 0.0,
        "scoring_s_per_step": scoring / len(batches),
        "engine_outcome_disagreements": disagreements,
    }


def train_one(config_json: str, arm_name: str, seed: int, out: str, device: str, quick: bool) -> dict:
    """One (arm, seed) run, in a worker process; returns its summary (and writes done.json)."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import arms
    from transformers import TrainerCallback

    config = ExperimentConfig.model_validate_json(config_json)
    arm = config.arm(arm_name)
    folder = run_dir(Path(out), arm_name, seed)
    folder.mkdir(parents=True, exist_ok=True)
    eval_path = folder / "eval.jsonl"
    eval_path.unlink(missing_ok=True)
    sft = Path(out) / "sft"
    evaluator = Evaluator(config, sft)
    trainer = arms.build_trainer(arm, config, sft, folder / "trl", seed, device)
    every, total = config.eval.every_steps, config.training.steps
    clock: dict[str, float] = {"start": 0.0, "eval": 0.0, "seen": 0}

    def evaluate(model: Any, step: int) -> None:
        started = time.perf_counter()
        point = evaluator(model)
        clock["eval"] += time.perf_counter() - started
        wall = 0.0 if step == 0 else time.perf_counter() - clock["start"] - clock["eval"]
        batches = trainer.recorder.batches[int(clock["seen"]) :]
        clock["seen"] = len(trainer.recorder.batches)
        row = {"arm": arm_name, "seed": seed, "step": step, "wall_s": round(wall, 2), **point}
        row.update(_batch_stats(batches))
        with eval_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"[{arm_name} seed {seed}] step {step}: accuracy {point['accuracy']:.3f}", flush=True)

    class EvalCallback(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
            evaluate(model, 0)
            clock["start"] = time.perf_counter()
            clock["eval"] = 0.0

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
            if state.global_step % every == 0 or state.global_step == total:
                evaluate(model, state.global_step)

    trainer.add_callback(EvalCallback())
    started = time.perf_counter()
    trainer.train()
    summary: dict[str, Any] = {
        "arm": arm_name,
        "seed": seed,
        "steps": int(trainer.state.global_step),
        "run_wall_s": round(time.perf_counter() - started, 1),
        "train_wall_s": round(time.perf_counter() - clock["start"] - clock["eval"], 1),
    }
    if quick:
        import arm_checks

        summary["checks"] = arm_checks.check_arm(arm, config, trainer)
    (folder / "done.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _submit_all(config: ExperimentConfig, out: Path, device: str, quick: bool) -> list[dict]:
    todo = [
        (arm.name, seed)
        for seed in config.seeds
        for arm in config.arms
        if not (run_dir(out, arm.name, seed) / "done.json").exists()
    ]
    done = [
        json.loads((run_dir(out, arm.name, seed) / "done.json").read_text())
        for seed in config.seeds
        for arm in config.arms
        if (arm.name, seed) not in todo
    ]
    if done:
        print(f"{len(done)} runs already finished (done.json), {len(todo)} to run", flush=True)
    failures: list[str] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=config.workers, mp_context=context) as pool:
        futures = {
            pool.submit(train_one, config.model_dump_json(), arm, seed, str(out), device, quick): (arm, seed)
            for arm, seed in todo
        }
        for future in as_completed(futures):
            arm, seed = futures[future]
            try:
                summary = future.result()
            except Exception:
                failures.append(f"{arm} seed {seed}:\n{traceback.format_exc()}")
                continue
            done.append(summary)
            print(f"done: {arm} seed {seed} in {summary['run_wall_s']} s", flush=True)
    if failures:
        raise SystemExit("runs failed:\n" + "\n".join(failures))
    return done


def _record_invocation(path: Path, wall: float, runs: int, device: str) -> None:
    """experiment.json: each invocation's wall time (a resumed run adds one) and their total."""
    previous = json.loads(path.read_text()) if path.exists() else {}
    invocations = previous.get("invocations") or ([previous] if "wall_s" in previous else [])
    invocations = [
        {key: item[key] for key in ("wall_s", "runs", "device") if key in item} for item in invocations
    ]
    invocations.append({"wall_s": round(wall, 1), "runs": runs, "device": device})
    total = round(sum(item["wall_s"] for item in invocations), 1)
    path.write_text(json.dumps({"wall_s": total, "invocations": invocations}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=config_module.DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=Path("outputs/mig_vs_grpo/run"))
    parser.add_argument("--quick", action="store_true", help="3 steps, one seed, tiny eval, advantage checks")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--sft", type=Path, default=None, help="use this SFT checkpoint (copied into OUT/sft)"
    )
    args = parser.parse_args(argv)
    config = config_module.load(args.config)
    if args.quick:
        config = config.quick()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sft is not None and not (args.out / "sft").exists():
        import shutil

        shutil.copytree(args.sft, args.out / "sft")
    (args.out / "config.json").write_text(config.model_dump_json(indent=2) + "\n")
    started = time.perf_counter()
    ensure_sft(config, args.out)
    summaries = _submit_all(config, args.out, args.device, args.quick)
    wall = time.perf_counter() - started
    _record_invocation(args.out / "experiment.json", wall, len(summaries), args.device)
    print(f"experiment finished: {len(summaries)} runs in {wall:.0f} s", flush=True)
    return summaries


if __name__ == "__main__":
    main()
