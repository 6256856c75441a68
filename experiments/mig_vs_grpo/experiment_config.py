"""The experiment's typed configuration: arms, seeds, training budget, evaluation schedule, SFT checkpoint.

``config.json`` next to this file is the pre-registered configuration of the full run (committed before
the run). :func:`load` reads and validates one; :meth:`ExperimentConfig.quick` derives the plumbing check
(a few steps, one seed, a tiny evaluation) from it, changing nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mig_annotator.trainer.advantages import AdvantageSettings

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "config.json"

RewardPath = Literal["outcome", "scalar_mixed", "decoupled"]
ProbeRole = Literal["frozen", "policy"]


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

    @model_validator(mode="after")
    def _consistent(self) -> ArmSpec:
        if self.reward == "outcome" and self.probe is not None:
            raise ValueError(f"arm {self.name}: the outcome arm has no probe")
        if self.reward != "outcome" and self.probe is None:
            raise ValueError(f"arm {self.name}: reward {self.reward!r} needs a probe ('frozen' or 'policy')")
        if (self.reward == "decoupled") != (self.advantages is not None):
            raise ValueError(f"arm {self.name}: advantages are given for (and only for) decoupled arms")
        if self.reward == "scalar_mixed" and self.probe != "frozen":
            raise ValueError(f"arm {self.name}: the scalar arm scores with the frozen probe")
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
    target_accuracy: float = Field(gt=0.0, le=1.0, description="for 'steps to reach'")
    report_steps: list[int] = Field(description="the table's fixed step counts")


class ExperimentConfig(_Strict):
    name: str
    question: str
    seeds: list[int] = Field(min_length=1)
    workers: int = Field(default=2, gt=0, description="runs in parallel (one process each, 1 thread)")
    arms: list[ArmSpec] = Field(min_length=1)
    dropped_arms: dict[str, str] = Field(default_factory=dict, description="arm name -> why")
    sft: SftSpec
    training: TrainingSpec
    eval: EvalSpec
    scoring: str = Field(description="how the probe arms score (stated, not read by the code)")
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
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"no arm {name!r}; arms: {[a.name for a in self.arms]}")

    def quick(self) -> ExperimentConfig:
        """The plumbing check: 3 steps, the first seed, 16 held-out problems evaluated every step; the
        arms, the SFT checkpoint and every training setting unchanged."""
        return self.model_copy(
            update={
                "name": f"{self.name}-quick",
                "seeds": self.seeds[:1],
                "training": self.training.model_copy(update={"steps": 3}),
                "eval": self.eval.model_copy(
                    update={"every_steps": 1, "n_problems": 16, "report_steps": [0, 3]}
                ),
            }
        )


def load(path: Path = DEFAULT_CONFIG) -> ExperimentConfig:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the experiment config: {error}") from error
    return ExperimentConfig.model_validate(raw)
