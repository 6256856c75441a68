"""The label rules of `export prm` (no polars here: the CLI imports them for its help).

TRL's stepwise-supervision format labels each step True when the step is correct. The probe's value v_k is
its log-likelihood of the reference answer after step k; mig_k = v_k - v_{k-1} is what step k did to it and
r_k (the reward) is positive only when step k lifts v past its best so far. A right step that does not set a
new best (a restatement, a step of a long computation) earns r_k = 0 but does not hurt the answer: labelling
it False tells a PRM that it is wrong. The default therefore labels a step by whether it lowered the value
by more than tau = 0.5 (nats of the reference answer's log-likelihood): on 200 GSM8K rollouts with silver
step labels and the default probe (bench/prm_label_rules.py) it had the best ProcessBench F1 of the rules
and taus tried (0.34; `eval` chose tau 0.52 for mig_k on the same data) and labelled 79% of the right steps
True, where ``new-max`` labelled 26%. Another probe has another scale: take `eval`'s "tau chosen on the
data" for mig_k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from mig_annotator.builder.errors import DatasetError

StepLabelRule = Literal["no-drop", "no-drop-from-best", "new-max"]
#: What each rule labels True ("this step is correct" in TRL's stepwise format); tau >= 0.
STEP_LABEL_RULES: dict[StepLabelRule, str] = {
    "no-drop": "the step does not lower the value by more than tau: mig_k >= -tau",
    "no-drop-from-best": "the step ends at most tau below the best value before it: v_k - W_{k-1} >= -tau",
    "new-max": "the step earns reward (r_k > 0: a new maximum of the value); tau is not used",
}
DEFAULT_STEP_LABEL_RULE: StepLabelRule = "no-drop"
DEFAULT_STEP_LABEL_TAU = 0.5


@dataclass(frozen=True)
class StepLabels:
    """How `export prm` labels each step; the default keeps a right trace's steps True (see the notes)."""

    rule: StepLabelRule = DEFAULT_STEP_LABEL_RULE
    tau: float = DEFAULT_STEP_LABEL_TAU

    def __post_init__(self) -> None:
        if self.rule not in STEP_LABEL_RULES:
            raise DatasetError(f"--label-rule {self.rule}: choose one of {', '.join(STEP_LABEL_RULES)}")
        if not (math.isfinite(self.tau) and self.tau >= 0):
            raise DatasetError(f"--tau must be a finite number >= 0, got {self.tau}")
