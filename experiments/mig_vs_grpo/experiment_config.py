"""The experiment's typed configuration: arms, seeds, training budget, evaluation schedule, SFT checkpoint.

``config.json`` next to this file is the pre-registered configuration of the first full run (committed
before the run; kept as its record). ``config_controls.json`` is the second experiment's: the oracle and
placebo controls, the credit's accuracy, three regimes and a pre-registered power (a
:class:`ControlsConfig`, one :class:`ExperimentConfig` per regime through
:meth:`ControlsConfig.regime_config`). :func:`load` reads and validates either;
``quick()`` derives the plumbing check (a few steps, one seed, a tiny evaluation) from it, changing nothing
else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mig_annotator.trainer.advantages import AdvantageSettings

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "config.json"
CONTROLS_CONFIG = HERE / "config_controls.json"
QUICK_SFT_STEPS = 120

RewardPath = Literal["outcome", "scalar_mixed", "decoupled"]
ProbeRole = Literal["frozen", "policy"]
ProcessSource = Literal["mig", "oracle", "placebo"]
DecisionRule = Literal["spread_and_every_seed", "paired_t"]


def _named(items: list[Any], name: str, kind: str) -> Any:
    """The item called ``name`` (KeyError naming the ones there are)."""
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"no {kind} {name!r}; {kind}s: {[i.name for i in items]}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmSpec(_Strict):
    """One arm: its reward path, and (where the probe scores) which model is the probe."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str
    reward: RewardPath = Field(
        description="outcome: TRL GRPOTrainer on the 0/1 outcome; scalar_mixed: TRL GRPOTrainer on "
        "outcome + lam * sum_k r_k (schemas.scalar.scalar_reward, the adapters' mix); decoupled: "
        "MigGRPOTrainer (per-token advantages, optional SFT term)."
    )
    probe: ProbeRole | None = Field(
        default=None,
        description="frozen: TRL's reference model (the SFT checkpoint, beta > 0) in process; policy: the "
        "live policy in process. None for the outcome arm (no probe).",
    )
    advantages: AdvantageSettings | None = Field(default=None, description="decoupled arms only")
    process_reward: ProcessSource = Field(
        default="mig",
        description="decoupled arms: where the step rewards r_k come from. mig: the probe's; oracle: the "
        "task's grader (task.oracle_step_rewards: 1 for a valid step that keeps the answer alive, 0 from "
        "the first that does not) on the probe's own step segmentation; placebo: the batch's MIG rewards "
        "permuted across its completions' steps (seeded). Placement and advantages are MIG's either way.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ArmSpec:
        if self.process_reward != "mig" and self.reward != "decoupled":
            raise ValueError(f"arm {self.name}: process_reward {self.process_reward!r} is for decoupled arms")
        if self.reward == "outcome" and self.probe is not None:
            raise ValueError(f"arm {self.name}: the outcome arm has no probe")
        if self.reward != "outcome" and self.probe is None:
            raise ValueError(f"arm {self.name}: reward {self.reward!r} needs a probe ('frozen' or 'policy')")
        if (self.reward == "decoupled") != (self.advantages is not None):
            raise ValueError(f"arm {self.name}: advantages are given for (and only for) decoupled arms")
        if self.reward == "scalar_mixed" and self.probe != "frozen":
            raise ValueError(f"arm {self.name}: the scalar arm scores with the frozen probe")
        return self


class TaskSpec(_Strict):
    """The problems: how many distinct digits a question holds (task.problems' ``candidates``)."""

    min_candidates: int = Field(default=4, ge=2, le=10)
    max_candidates: int = Field(default=5, ge=2, le=10)

    @property
    def candidates(self) -> tuple[int, int]:
        return (self.min_candidates, self.max_candidates)

    @model_validator(mode="after")
    def _ordered(self) -> TaskSpec:
        if self.min_candidates > self.max_candidates:
            raise ValueError(f"task: min_candidates {self.min_candidates} > max_candidates")
        return self


class SftSpec(_Strict):
    """The SFT checkpoint every arm starts from (policy.pretrain's arguments); also the frozen probe."""

    steps: int = Field(gt=0)
    corrupted_share: float = Field(ge=0.0, le=1.0)
    seed: int = 0


class TrainingSpec(_Strict):
    """What every arm shares: TRL GRPOConfig fields and the training problems."""

    steps: int = Field(gt=0, description="optimizer steps per run")
    prompts_per_step: int = Field(gt=0)
    generations_per_prompt: int = Field(gt=1)
    learning_rate: float = Field(gt=0.0)
    lr_scheduler: Literal["constant", "linear"] = "constant"
    beta: float = Field(gt=0.0, description="KL weight; > 0 so TRL keeps the SFT checkpoint as reference")
    temperature: float = Field(gt=0.0)
    max_completion_length: int = Field(gt=0)
    lam: float = Field(ge=0.0, description="the scalar arm's lambda: outcome + lam * sum_k r_k")
    n_train_problems: int = Field(gt=0)
    train_problems_seed: int = 0


class EvalSpec(_Strict):
    """Held-out accuracy on a fixed set, every ``every_steps`` optimizer steps (and at step 0)."""

    every_steps: int = Field(gt=0)
    n_problems: int = Field(gt=0)
    problems_seed: int = Field(description="task.problems('held_out', n_problems, seed=problems_seed)")
    metric: Literal["sampled", "greedy"] = Field(
        description="sampled: one completion per problem at the training temperature (pass@1 estimate), "
        "drawn with a fixed seed (the same draws at every eval point, the trainer's RNG untouched)."
    )
    sample_seed: int = 0
    samples_per_problem: int = Field(
        default=1, gt=0, description="sampled metric: completions per problem; accuracy is their mean"
    )
    greedy: bool = Field(default=False, description="also report greedy accuracy on the same problems")
    curve_samples_per_problem: int | None = Field(
        default=None,
        gt=0,
        description="at the points between step 0 and the last (the curve, not the primary metric): this "
        "many samples per problem and no greedy pass, to save time; None: as at the ends",
    )
    credit_problems: int = Field(
        default=0,
        ge=0,
        description="credit accuracy: at every evaluation point, fresh rollouts of the current policy on "
        "this many fixed train problems (credit_samples each, seed credit_seed, the trainer's RNG "
        "untouched), scored by the frozen and the policy probe; the step AUROC of their credit against "
        "the task's step validity. 0: not measured.",
    )
    credit_samples: int = Field(default=4, gt=0)
    credit_seed: int = 0
    target_accuracy: float = Field(gt=0.0, le=1.0, description="for 'steps to reach'")
    report_steps: list[int] = Field(description="the table's fixed step counts")


class PowerSpec(_Strict):
    """The pre-registered power: the paired t rule's smallest detectable difference (power.py)."""

    alpha: float = Field(default=0.05, gt=0.0, lt=1.0, description="two-sided level of the paired t test")
    power: float = Field(default=0.8, gt=0.0, lt=1.0)
    paired_sd: dict[str, float] = Field(
        description="regime -> the pilot's standard deviation of a paired final difference (arm - "
        "outcome) over seeds, evaluation noise of the registered evaluation included"
    )
    minimum_detectable_difference: dict[str, float] = Field(
        description="regime -> power.minimum_detectable_difference(paired_sd, len(seeds), alpha, power)"
    )


class ExperimentConfig(_Strict):
    name: str
    question: str
    seeds: list[int] = Field(min_length=1)
    workers: int = Field(default=2, gt=0, description="runs in parallel (one process each, 1 thread)")
    arms: list[ArmSpec] = Field(min_length=1)
    dropped_arms: dict[str, str] = Field(default_factory=dict, description="arm name -> why")
    task: TaskSpec = Field(default_factory=TaskSpec)
    sft: SftSpec
    training: TrainingSpec
    eval: EvalSpec
    scoring: str = Field(description="how the probe arms score (stated, not read by the code)")
    rule: DecisionRule = Field(
        default="spread_and_every_seed",
        description="spread_and_every_seed: the first run's rule (report.verdict); paired_t: the paired t "
        "test's confidence interval over seeds (report.paired_verdict, level 1 - power.alpha)",
    )
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0, description="paired_t: two-sided level")
    decision_rule: str = Field(description="how the report calls win / lose / tie (report.verdict)")
    pilot: str = Field(description="what was tried before this config was fixed, and what it decided")
    amendment: str | None = Field(default=None, description="a change after registration: when, what, why")

    @model_validator(mode="after")
    def _names_unique(self) -> ExperimentConfig:
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arms: names must be unique, got {names}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: must be distinct, got {self.seeds}")
        return self

    def arm(self, name: str) -> ArmSpec:
        return _named(self.arms, name, "arm")

    def quick(self) -> ExperimentConfig:
        """The plumbing check: 3 steps, the first seed, 16 held-out problems evaluated every step; the
        arms, the SFT checkpoint and every training setting unchanged."""
        return self.model_copy(
            update={
                "name": f"{self.name}-quick",
                "seeds": self.seeds[:1],
                "training": self.training.model_copy(update={"steps": 3}),
                "eval": self.eval.model_copy(
                    update={
                        "every_steps": 1,
                        "n_problems": 16,
                        "report_steps": [0, 3],
                        "credit_problems": min(self.eval.credit_problems, 4),
                    }
                ),
            }
        )


class RegimeSpec(_Strict):
    """One regime of the controls experiment: its task, its SFT recipe (the start) and its new tokens."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str
    task: TaskSpec
    sft: SftSpec
    max_completion_length: int = Field(gt=0, description="new tokens, in training and evaluation")


class BudgetSpec(_Strict):
    """What the registered run costs, from the pilot's measurements."""

    stretch_minutes: float = Field(gt=0.0, description="one stretch: at most this much wall time")
    run_minutes: dict[str, float] = Field(description="regime -> the pilot's minutes per run, one worker")
    total_minutes_one_worker: float = Field(gt=0.0)
    stretches_one_worker: int = Field(gt=0)
    stretches_two_workers: int = Field(gt=0)


class ControlsConfig(_Strict):
    """The controls experiment: the same arms and seeds in every regime, one run folder per regime."""

    name: str
    question: str
    seeds: list[int] = Field(min_length=1)
    arms: list[ArmSpec] = Field(min_length=1)
    regimes: list[RegimeSpec] = Field(min_length=1)
    training: TrainingSpec = Field(description="shared; max_completion_length is the regime's")
    eval: EvalSpec
    scoring: str
    decision_rule: str
    power: PowerSpec
    budget: BudgetSpec
    pilot: str
    amendment: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ControlsConfig:
        names = [regime.name for regime in self.regimes]
        if len(set(names)) != len(names):
            raise ValueError(f"regimes: names must be unique, got {names}")
        for key in ("paired_sd", "minimum_detectable_difference"):
            missing = set(names) - set(getattr(self.power, key))
            if missing:
                raise ValueError(f"power.{key}: no value for regimes {sorted(missing)}")
        if "outcome" not in {arm.name for arm in self.arms}:
            raise ValueError("arms: the controls compare every arm with 'outcome', which is missing")
        return self

    def arm(self, name: str) -> ArmSpec:
        return _named(self.arms, name, "arm")

    def regime(self, name: str) -> RegimeSpec:
        return _named(self.regimes, name, "regime")

    def regime_config(self, name: str) -> ExperimentConfig:
        """The regime's experiment: the shared arms, seeds, training and evaluation, its task, SFT recipe
        and new tokens, the paired t rule."""
        regime = self.regime(name)
        return ExperimentConfig(
            name=f"{self.name}/{regime.name}",
            question=f"{self.question} Regime {regime.name}: {regime.description}",
            seeds=self.seeds,
            arms=self.arms,
            task=regime.task,
            sft=regime.sft,
            training=self.training.model_copy(update={"max_completion_length": regime.max_completion_length}),
            eval=self.eval,
            scoring=self.scoring,
            rule="paired_t",
            alpha=self.power.alpha,
            decision_rule=self.decision_rule,
            pilot=self.pilot,
            amendment=self.amendment,
        )

    def quick(self) -> ControlsConfig:
        """Every regime's quick mode (ExperimentConfig.quick: 3 steps, the first seed, a tiny evaluation),
        each regime's SFT checkpoint cut to at most ``QUICK_SFT_STEPS`` steps (the plumbing, not the
        start, is what the quick mode checks)."""
        first = self.regime_config(self.regimes[0].name).quick()
        regimes = [
            regime.model_copy(
                update={
                    "sft": regime.sft.model_copy(update={"steps": min(regime.sft.steps, QUICK_SFT_STEPS)})
                }
            )
            for regime in self.regimes
        ]
        return self.model_copy(
            update={
                "name": f"{self.name}-quick",
                "regimes": regimes,
                "seeds": first.seeds,
                "training": self.training.model_copy(update={"steps": first.training.steps}),
                "eval": first.eval,
            }
        )


def load(path: Path = DEFAULT_CONFIG) -> ExperimentConfig | ControlsConfig:
    """An :class:`ExperimentConfig`, or a :class:`ControlsConfig` when the file has ``regimes``."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the experiment config: {error}") from error
    if isinstance(raw, dict) and "regimes" in raw:
        return ControlsConfig.model_validate(raw)
    return ExperimentConfig.model_validate(raw)
