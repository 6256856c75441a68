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

A controls config (``config_controls.json``: ``regimes``) runs every regime into ``OUT/REGIME/`` (its own
SFT checkpoint and runs), seed by seed, in stretches: ``--stretch-minutes`` (default the config's
``budget.stretch_minutes``) starts no run that would end after it, and the same command resumes;
``--workers auto`` (its default) uses both cores only while the machine is otherwise idle::

    python experiments/mig_vs_grpo/run.py --config experiments/mig_vs_grpo/config_controls.json \
        --out outputs/mig_vs_grpo/controls      # one stretch; repeat until "experiment finished"
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import experiment_config as config_module  # the folder is package-free
import policy
import task
from experiment_config import ControlsConfig, ExperimentConfig


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / arm / f"seed{seed}"


def ensure_sft(config: ExperimentConfig, out: Path) -> Path:
    folder = out / "sft"
    if not (folder / "pretrain_figures.json").exists():
        import torch

        torch.set_num_threads(1)
        sft = config.sft
        print(f"SFT checkpoint: pretraining into {folder}", flush=True)
        policy.pretrain(
            folder,
            steps=sft.steps,
            corrupted_share=sft.corrupted_share,
            seed=sft.seed,
            candidates=config.task.candidates,
            max_new_tokens=config.training.max_completion_length,
        )
    return folder


def _steps_of(completion: str) -> int:
    """The chain's step count: the non-blank lines before the answer line (all of them if none)."""
    lines = [line for line in completion.strip().splitlines() if line.strip()]
    while lines and lines[-1].strip().startswith("A:"):
        lines.pop()
    return len(lines)


class Evaluator:
    """Held-out accuracy of the live model on a fixed set, with a fixed sampling seed, the trainer's RNG
    state left as it was: ``samples_per_problem`` samples per problem (their mean; ``correct_per_problem``
    keeps the counts; ``curve_samples_per_problem`` between the first and the last point), greedy accuracy
    too when asked (at the ends only with a curve setting), and the credit's step AUROC on fresh rollouts when
    ``credit_problems`` > 0."""

    def __init__(self, config: ExperimentConfig, sft: Path) -> None:
        from transformers import AutoTokenizer

        self.spec = config.eval
        self.last_step = config.training.steps
        self.max_new_tokens = config.training.max_completion_length
        candidates = config.task.candidates
        self.problems = task.problems("held_out", self.spec.n_problems, self.spec.problems_seed, candidates)
        self.tokenizer = AutoTokenizer.from_pretrained(str(sft))  # its own: TRL's keeps its padding side
        self.credit = CreditMeter(config, sft) if self.spec.credit_problems > 0 else None

    def _complete(self, model: Any, questions: list[str], sample: bool, seed: int) -> list[str]:
        import torch

        devices = [model.device.index or 0] if model.device.type == "cuda" else []
        was_training = model.training
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            completions = policy.sample_completions(
                model,
                self.tokenizer,
                questions,
                sample=sample,
                max_new_tokens=self.max_new_tokens,
                batch_size=512,
            )
        model.train(was_training)
        return completions

    def __call__(self, model: Any, step: int = 0) -> dict[str, Any]:
        spec = self.spec
        sampled = spec.metric == "sampled"
        end = step in (0, self.last_step)
        repeats = spec.samples_per_problem if sampled else 1
        if sampled and not end and spec.curve_samples_per_problem is not None:
            repeats = spec.curve_samples_per_problem
        questions = [p.question for p in self.problems for _ in range(repeats)]
        completions = self._complete(model, questions, sampled, spec.sample_seed)
        answers = [p.answer for p in self.problems for _ in range(repeats)]
        right = [task.parse_answer(c) == a for c, a in zip(completions, answers, strict=True)]
        lengths = [len(self.tokenizer.encode(c, add_special_tokens=False)) for c in completions]
        row: dict[str, Any] = {
            "accuracy": sum(right) / len(right),
            "mean_completion_tokens": sum(lengths) / len(lengths),
            "mean_step_count": sum(_steps_of(c) for c in completions) / len(completions),
        }
        if repeats > 1:
            row["correct_per_problem"] = [sum(right[i : i + repeats]) for i in range(0, len(right), repeats)]
        row["samples_per_problem"] = repeats
        if spec.greedy and sampled and (end or spec.curve_samples_per_problem is None):
            greedy = self._complete(model, [p.question for p in self.problems], False, spec.sample_seed)
            row["greedy_accuracy"] = sum(
                task.parse_answer(c) == p.answer for c, p in zip(greedy, self.problems, strict=True)
            ) / len(self.problems)
        if self.credit is not None:
            row.update(self.credit(model, step, self._complete))
        return row


class CreditMeter:
    """The credit's accuracy on the policy's own rollouts: ``credit_samples`` fresh samples (T = 1, seed
    ``credit_seed``) on each of ``credit_problems`` fixed train problems, scored through the engine by the
    frozen probe (the SFT checkpoint) and by the policy itself; the step AUROC of -mig_k and of -r_k
    against the task's step validity (controls.credit_auroc), and the share of rollouts with an invalid
    step."""

    def __init__(self, config: ExperimentConfig, sft: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from mig_annotator.engine.annotator import Annotator
        from mig_annotator.engine.probe.live_model import LiveModelProbe
        from mig_annotator.schemas import ScoringConfig

        spec = config.eval
        self.problems = task.problems(
            "train", spec.credit_problems, 5000 + spec.credit_seed, config.task.candidates
        )
        self.samples, self.seed = spec.credit_samples, spec.credit_seed
        self.tokenizer = AutoTokenizer.from_pretrained(str(sft))
        self.scoring = ScoringConfig.model_validate({"prompt": policy.PROBE_TEMPLATE})
        frozen = AutoModelForCausalLM.from_pretrained(str(sft))
        frozen.eval()
        self.frozen = Annotator(LiveModelProbe(frozen, self.tokenizer, name="reference"), self.scoring)

    def __call__(self, model: Any, step: int, complete: Any) -> dict[str, Any]:
        import controls

        from mig_annotator.engine.annotator import Annotator
        from mig_annotator.engine.probe.live_model import LiveModelProbe
        from mig_annotator.schemas import Trace, TraceAnnotation

        problems = [p for p in self.problems for _ in range(self.samples)]
        completions = complete(model, [p.question for p in problems], True, self.seed)
        traces = [
            Trace(id=str(i), question=p.question, completion=c, reference_answer=str(p.answer))
            if c.strip()
            else None
            for i, (c, p) in enumerate(zip(completions, problems, strict=True))
        ]
        live = Annotator(LiveModelProbe(model, self.tokenizer, name="policy", version=step), self.scoring)
        row: dict[str, Any] = {}
        for probe, annotator in (("frozen", self.frozen), ("policy", live)):
            sent = [t for t in traces if t is not None]
            results = iter(annotator.annotate_many(sent) if sent else [])
            notes = [next(results) if t is not None else None for t in traces]
            notes = [n if isinstance(n, TraceAnnotation) else None for n in notes]
            for field in ("mig", "reward"):
                measured = controls.credit_auroc(notes, problems, field)
                row[f"credit_auroc_{probe}_{field}"] = measured["auroc"]
            row["credit_first_invalid_steps"] = measured["first_invalid_steps"]
            row["credit_valid_steps"] = measured["valid_steps"]
        row["credit_rollouts"] = len(problems)
        return row


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
    label = f"{config.name} {arm_name} seed {seed}"
    sft = Path(out) / "sft"
    evaluator = Evaluator(config, sft)
    trainer = arms.build_trainer(arm, config, sft, folder / "trl", seed, device)
    every, total = config.eval.every_steps, config.training.steps
    clock: dict[str, float] = {"start": 0.0, "eval": 0.0, "seen": 0}

    def evaluate(model: Any, step: int) -> None:
        started = time.perf_counter()
        point = evaluator(model, step)
        clock["eval"] += time.perf_counter() - started
        wall = 0.0 if step == 0 else time.perf_counter() - clock["start"] - clock["eval"]
        batches = trainer.recorder.batches[int(clock["seen"]) :]
        clock["seen"] = len(trainer.recorder.batches)
        row = {"arm": arm_name, "seed": seed, "step": step, "wall_s": round(wall, 2), **point}
        row.update(_batch_stats(batches))
        with eval_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"[{label}] step {step}: accuracy {point['accuracy']:.3f}", flush=True)

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


@dataclass(frozen=True)
class Job:
    """One (arm, seed) run of one experiment (a regime of the controls config, or the whole of a plain
    config), written under ``out``."""

    config: ExperimentConfig
    out: Path
    arm: str
    seed: int
    expected_s: float = 0.0  # the pilot's estimate of its wall seconds (0: unknown)

    @property
    def done_file(self) -> Path:
        return run_dir(self.out, self.arm, self.seed) / "done.json"

    @property
    def label(self) -> str:
        return f"{self.config.name} {self.arm} seed {self.seed}"


def workers_for(setting: str, running: int, load: float | None = None, cores: int | None = None) -> int:
    """How many runs may go at once. A number: that many. ``auto``: every core when the machine is
    otherwise idle (the 1-minute load average, less the ``running`` runs of this command, below 0.5),
    else 1, so other work on the machine is not starved."""
    if setting != "auto":
        count = int(setting)
        if count < 1:
            raise ValueError(f"--workers: expected 'auto' or a positive number, got {setting!r}")
        return count
    load = os.getloadavg()[0] if load is None else load
    cores = (os.cpu_count() or 1) if cores is None else cores
    return cores if load - running < 0.5 else 1


def pending(jobs: list[Job]) -> tuple[list[Job], list[dict]]:
    """The jobs still to run, and the summaries of the finished ones (done.json: never rerun)."""
    todo = [job for job in jobs if not job.done_file.exists()]
    done = [json.loads(job.done_file.read_text()) for job in jobs if job.done_file.exists()]
    return todo, done


def run_jobs(
    jobs: list[Job],
    device: str,
    quick: bool,
    workers: str,
    stretch_s: float | None = None,
) -> tuple[list[dict], int]:
    """Run the unfinished ``jobs`` in order, up to ``workers`` at a time (re-read before each start with
    ``auto``); with ``stretch_s``, no run starts that would end after it (its estimate: the mean of the
    runs finished in this invocation, else the job's ``expected_s``). Returns the finished runs'
    summaries and the number left for another stretch."""
    todo, done = pending(jobs)
    if done:
        print(f"{len(done)} runs already finished (done.json), {len(todo)} to run", flush=True)
    failures: list[str] = []
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    walls: list[float] = []
    queue = list(todo)
    capacity = workers_for(workers, 0) if workers != "auto" else os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=capacity, mp_context=context) as pool:
        running: dict[Any, Job] = {}
        while queue or running:
            while queue and len(running) < workers_for(workers, len(running)):
                job = queue[0]
                estimate = statistics.fmean(walls) if walls else job.expected_s
                if stretch_s is not None and time.perf_counter() - started + estimate > stretch_s:
                    break
                queue.pop(0)
                future = pool.submit(
                    train_one,
                    job.config.model_dump_json(),
                    job.arm,
                    job.seed,
                    str(job.out),
                    device,
                    quick,
                )
                running[future] = job
            if not running:
                break  # the stretch is over: what is left waits for the next invocation
            finished, _ = wait(running, timeout=30, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                try:
                    summary = future.result()
                except Exception:
                    failures.append(f"{job.label}:\n{traceback.format_exc()}")
                    continue
                done.append(summary)
                walls.append(float(summary["run_wall_s"]))
                print(f"done: {job.label} in {summary['run_wall_s']} s", flush=True)
    if failures:
        raise SystemExit("runs failed:\n" + "\n".join(failures))
    if queue:
        print(f"stretch over: {len(queue)} runs left; run the same command again to go on", flush=True)
    return done, len(queue)


def _jobs(
    config: ExperimentConfig | ControlsConfig, out: Path, quick: bool
) -> list[tuple[ExperimentConfig, Path, list[Job]]]:
    """Per experiment (each regime of a controls config, or the one plain config): its config, its
    folder, its jobs; a controls config's jobs go seed by seed, so each stretch completes paired sets."""
    if isinstance(config, ExperimentConfig):
        jobs = [Job(config, out, arm.name, seed) for seed in config.seeds for arm in config.arms]
        return [(config, out, jobs)]
    experiments = []
    for regime in config.regimes:
        regime_config = config.regime_config(regime.name)
        if quick:
            regime_config = regime_config.model_copy(update={"seeds": config.seeds})
        experiments.append((regime_config, out / regime.name, []))
    expected = config.budget.run_minutes
    for seed in config.seeds:
        for regime_config, folder, jobs in experiments:
            regime = regime_config.name.rsplit("/", 1)[-1]
            for arm in config.arms:
                jobs.append(Job(regime_config, folder, arm.name, seed, 60 * expected.get(regime, 0.0)))
    return experiments


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


def _restricted(
    config: ExperimentConfig | ControlsConfig,
    seeds: list[int] | None,
    arms: list[str] | None,
    regimes: list[str] | None,
) -> ExperimentConfig | ControlsConfig:
    """The config cut to the named seeds, arms and regimes (each must exist)."""
    update: dict[str, Any] = {}
    if seeds is not None:
        unknown = set(seeds) - set(config.seeds)
        if unknown:
            raise SystemExit(f"--seeds: {sorted(unknown)} not in the config's seeds {config.seeds}")
        update["seeds"] = seeds
    if arms is not None:
        update["arms"] = (
            [config.arm(name) for name in arms]
            if isinstance(config, ExperimentConfig)
            else [arm for arm in config.arms if arm.name in arms]
        )
        missing = set(arms) - {arm.name for arm in update["arms"]}
        if missing:
            raise SystemExit(f"--arms: no arm {sorted(missing)} in the config")
    if regimes is not None:
        if not isinstance(config, ControlsConfig):
            raise SystemExit("--regimes: only a controls config has regimes")
        try:
            update["regimes"] = [config.regime(name) for name in regimes]
        except KeyError as error:
            raise SystemExit(f"--regimes: {error}") from error
    return config.model_copy(update=update)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=config_module.DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=Path("outputs/mig_vs_grpo/run"))
    parser.add_argument("--quick", action="store_true", help="3 steps, one seed, tiny eval, advantage checks")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--sft", type=Path, default=None, help="use this SFT checkpoint (copied into OUT/sft; plain configs)"
    )
    parser.add_argument(
        "--workers",
        default=None,
        help="runs at once: a number, or 'auto' (every core while the machine is otherwise idle, else 1; "
        "re-read before each run starts). Default: the config's workers; 'auto' for a controls config.",
    )
    parser.add_argument(
        "--stretch-minutes",
        type=float,
        default=None,
        help="start no run that would end after this many minutes (finished runs are kept: run the "
        "command again for the next stretch). Default: the controls config's budget.stretch_minutes.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="only these seeds (a pilot)")
    parser.add_argument("--arms", nargs="+", default=None, help="only these arms (a pilot)")
    parser.add_argument("--regimes", nargs="+", default=None, help="only these regimes (controls config)")
    args = parser.parse_args(argv)
    config = config_module.load(args.config)
    if args.quick:
        config = config.quick()
    config = _restricted(config, args.seeds, args.arms, args.regimes)
    controls = isinstance(config, ControlsConfig)
    workers = args.workers or ("auto" if controls else str(config.workers))
    stretch = args.stretch_minutes
    if stretch is None and controls and not args.quick:
        stretch = config.budget.stretch_minutes
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sft is not None and not controls and not (args.out / "sft").exists():
        import shutil

        shutil.copytree(args.sft, args.out / "sft")
    (args.out / "config.json").write_text(config.model_dump_json(indent=2) + "\n")
    started = time.perf_counter()
    experiments = _jobs(config, args.out, args.quick)
    for experiment_config, folder, _ in experiments:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(experiment_config.model_dump_json(indent=2) + "\n")
        ensure_sft(experiment_config, folder)
    jobs = [job for seed in config.seeds for _, _, js in experiments for job in js if job.seed == seed]
    stretch_s = None if stretch is None else 60 * stretch - (time.perf_counter() - started)
    summaries, left = run_jobs(jobs, args.device, args.quick, workers, stretch_s)
    wall = time.perf_counter() - started
    _record_invocation(args.out / "experiment.json", wall, len(summaries), args.device)
    state = "finished" if left == 0 else f"paused ({left} runs left)"
    print(f"experiment {state}: {len(summaries)} runs done, this invocation {wall:.0f} s", flush=True)
    return summaries


if __name__ == "__main__":
    main()
