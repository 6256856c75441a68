"""The arms' trainers: one TRL trainer per reward path, each recording what it trained on.

* ``outcome``: TRL's ``GRPOTrainer`` with one reward function, the 0/1 outcome graded by
  :func:`task.parse_answer` (the ``A: N`` line against the reference). No probe.
* ``scalar_mixed``: TRL's ``GRPOTrainer`` with one reward function, ``outcome + lam * sum_k r_k``
  (:func:`mig_annotator.schemas.scalar.scalar_reward` with ``"mixed"``, the mix the TRL / verl / OpenRLHF
  adapters send), the annotations from the engine's :class:`Annotator` in process over a
  :class:`LiveModelProbe` of TRL's frozen reference model (the SFT checkpoint). TRL turns the scalar into
  its one-advantage-per-completion.
* ``decoupled``: :class:`MigGRPOTrainer` (per-token decoupled advantages, the optional gated SFT term),
  ``probe="reference"`` (frozen: the SFT checkpoint) or ``probe="policy"``. With ``process_reward``
  ``oracle`` or ``placebo`` (the controls), the probe's annotations keep their steps, spans and outcome and
  their step rewards are replaced (:mod:`controls`) before the trainer places them: the task's grading of
  each step, or the batch's MIG rewards permuted (a ``random.Random`` seeded with the run's seed).

Every trainer records, per generation batch, the advantages it used, the completion mask, the
annotations (probe arms), the outcome rewards and the seconds spent scoring (:class:`Recorded`).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import controls  # the folder is package-free
import policy
import task
from experiment_config import ArmSpec, ExperimentConfig

SCORING_CONFIG = {"prompt": policy.PROBE_TEMPLATE}


@dataclass
class Recorded:
    """What one generation batch trained on."""

    advantages: Any  # torch tensor: (B,) from TRL, (B, T) from MigGRPOTrainer
    completion_mask: Any  # (B, T)
    completion_ids: Any  # (B, T)
    annotations: list[Any] | None  # TraceAnnotation | None per completion (probe arms): what it trained on
    mig_annotations: list[Any] | None  # the probe's own annotations (differ for the oracle and placebo)
    questions: list[str] | None  # each completion's question (decoupled arms)
    outcomes: list[float]  # the task's 0/1 grading of each completion
    rewards: list[float] | None  # the scalar reward TRL normalised (TRL arms)
    gates: list[bool] | None  # the SFT gates (decoupled arms)
    scoring_s: float
    step: int


@dataclass
class Recorder:
    batches: list[Recorded] = field(default_factory=list)
    pending_scoring_s: float = 0.0
    pending_rewards: list[float] | None = None
    pending_outcomes: list[float] = field(default_factory=list)
    pending_annotations: list[Any] | None = None
    pending_mig_annotations: list[Any] | None = None
    pending_questions: list[str] | None = None


def _text(value: Any, role: str) -> str:
    if isinstance(value, str):
        return value
    return str([m for m in value if m.get("role") == role][-1]["content"])


def grade(completions: Sequence[Any], answers: Sequence[Any]) -> list[float]:
    """The 0/1 outcome of each completion: its last ``A: N`` line equals the reference."""
    return [
        float(task.parse_answer(_text(c, "assistant")) == int(a))
        for c, a in zip(completions, answers, strict=True)
    ]


def _recording(base: type) -> type:
    class RecordingTrainer(base):  # type: ignore[misc, valid-type]
        recorder: Recorder

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            rec = self.recorder
            annotations = getattr(self, "_batch_annotations", None)
            gates = self.mig_used_gates[-1] if hasattr(self, "mig_used_gates") else None
            rec.batches.append(
                Recorded(
                    advantages=output["advantages"].detach().cpu().clone(),
                    completion_mask=output["completion_mask"].detach().cpu().clone(),
                    completion_ids=output["completion_ids"].detach().cpu().clone(),
                    annotations=list(annotations) if annotations is not None else rec.pending_annotations,
                    mig_annotations=rec.pending_mig_annotations
                    or (list(annotations) if annotations is not None else rec.pending_annotations),
                    questions=rec.pending_questions,
                    outcomes=list(rec.pending_outcomes),
                    rewards=rec.pending_rewards,
                    gates=list(gates) if gates is not None else None,
                    scoring_s=rec.pending_scoring_s,
                    step=int(self.state.global_step),
                )
            )
            rec.pending_scoring_s, rec.pending_rewards, rec.pending_annotations = 0.0, None, None
            rec.pending_mig_annotations, rec.pending_questions = None, None
            return output

    return RecordingTrainer


def _decoupled_class() -> type:
    from mig_annotator.trainer.trl import MigGRPOTrainer

    class TimedMigGRPOTrainer(MigGRPOTrainer):
        recorder: Recorder
        process_source: str = "mig"
        placebo_rng: random.Random | None = None

        def score_completions(self, prompts: Any, completions: Any, columns: Any) -> list[Any]:
            started = time.perf_counter()
            annotations = super().score_completions(prompts, completions, columns)
            self.recorder.pending_scoring_s += time.perf_counter() - started
            self.recorder.pending_outcomes = grade(completions, columns["answer"])
            questions = [_text(p, "user") for p in prompts]
            self.recorder.pending_questions = questions
            if self.process_source == "mig":
                return annotations
            self.recorder.pending_mig_annotations = list(annotations)
            if self.process_source == "oracle":
                problems = [controls.problem_of(q) for q in questions]
                used = [controls.oracle_annotation(a, p) for a, p in zip(annotations, problems, strict=True)]
            else:
                assert self.placebo_rng is not None
                used = controls.placebo_annotations(annotations, self.placebo_rng)
            self.mig_annotations[-1] = used
            return used

    return _recording(TimedMigGRPOTrainer)


def _outcome_reward(recorder: Recorder) -> Callable[..., list[float]]:
    def outcome(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any], **_: Any) -> list:
        started = time.perf_counter()
        rewards = grade(completions, answer)
        recorder.pending_scoring_s += time.perf_counter() - started
        recorder.pending_outcomes, recorder.pending_rewards = rewards, list(rewards)
        return rewards

    return outcome


def _scalar_mixed_reward(
    recorder: Recorder, lam: float, holder: dict[str, Any]
) -> Callable[..., list[float]]:
    """outcome + lam * sum_k r_k from the engine over TRL's reference model (``holder['trainer']``)."""
    from mig_annotator.schemas import Trace, TraceAnnotation
    from mig_annotator.schemas.scalar import scalar_reward

    def scalar_mixed(
        prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any], **_: Any
    ) -> list[float]:
        started = time.perf_counter()
        annotator = holder.get("annotator") or _reference_annotator(holder)
        traces: list[Any] = []
        for index, (prompt, completion, reference) in enumerate(
            zip(prompts, completions, answer, strict=True)
        ):
            text = _text(completion, "assistant")
            traces.append(
                Trace(
                    id=str(index),
                    question=_text(prompt, "user"),
                    completion=text,
                    reference_answer=str(reference),
                )
                if text.strip()
                else None
            )
        sent = [t for t in traces if t is not None]
        results = iter(annotator.annotate_many(sent) if sent else [])
        annotations = [next(results) if t is not None else None for t in traces]
        annotations = [a if isinstance(a, TraceAnnotation) else None for a in annotations]
        rewards = [scalar_reward(a, "mixed", lam) if a is not None else math.nan for a in annotations]
        recorder.pending_scoring_s += time.perf_counter() - started
        recorder.pending_outcomes = grade(completions, answer)
        recorder.pending_rewards, recorder.pending_annotations = list(rewards), annotations
        return rewards

    return scalar_mixed


def _reference_annotator(holder: dict[str, Any]) -> Any:
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe.live_model import LiveModelProbe
    from mig_annotator.schemas import ScoringConfig

    trainer = holder["trainer"]
    probe = LiveModelProbe(
        trainer.accelerator.unwrap_model(trainer.ref_model), trainer.processing_class, name="reference"
    )
    holder["annotator"] = Annotator(probe, default_config=ScoringConfig.model_validate(SCORING_CONFIG))
    return holder["annotator"]


def grpo_config(config: ExperimentConfig, output_dir: Path, seed: int, device: str) -> Any:
    from trl import GRPOConfig

    training = config.training
    return GRPOConfig(
        output_dir=str(output_dir),
        use_cpu=device == "cpu",
        max_steps=training.steps,
        per_device_train_batch_size=training.prompts_per_step * training.generations_per_prompt,
        num_generations=training.generations_per_prompt,
        max_completion_length=training.max_completion_length,
        temperature=training.temperature,
        learning_rate=training.learning_rate,
        lr_scheduler_type=training.lr_scheduler,
        warmup_steps=0,
        beta=training.beta,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
    )


def train_dataset(config: ExperimentConfig) -> Any:
    from datasets import Dataset

    training = config.training
    problems = task.problems(
        "train", training.n_train_problems, training.train_problems_seed, config.task.candidates
    )
    return Dataset.from_list(
        [{"prompt": [{"role": "user", "content": p.question}], "answer": str(p.answer)} for p in problems]
    )


def build_trainer(
    arm: ArmSpec, config: ExperimentConfig, sft: Path, output_dir: Path, seed: int, device: str
) -> Any:
    """The arm's trainer over the SFT checkpoint ``sft`` (policy and, beta > 0, reference), with its
    ``recorder``."""
    from trl import GRPOTrainer

    recorder = Recorder()
    common: dict[str, Any] = {
        "model": str(sft),
        "args": grpo_config(config, output_dir, seed, device),
        "train_dataset": train_dataset(config),
    }
    if arm.reward == "decoupled":
        assert arm.advantages is not None
        trainer = _decoupled_class()(
            **common,
            probe="reference" if arm.probe == "frozen" else "policy",
            advantages=arm.advantages,
            scoring_config=SCORING_CONFIG,
        )
        trainer.process_source = arm.process_reward
        trainer.placebo_rng = random.Random(f"placebo/{arm.name}/{seed}")
    else:
        holder: dict[str, Any] = {}
        reward = (
            _outcome_reward(recorder)
            if arm.reward == "outcome"
            else _scalar_mixed_reward(recorder, config.training.lam, holder)
        )
        trainer = _recording(GRPOTrainer)(**common, reward_funcs=[reward])
        holder["trainer"] = trainer
    trainer.recorder = recorder
    return trainer
