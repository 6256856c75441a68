"""The controls' step rewards and the credit's accuracy, on the engine's annotations (pure: no torch).

* :func:`oracle_annotation`: the annotation with each step's reward replaced by the task's grading of that
  step (:func:`task.oracle_step_rewards`): the same steps, spans and outcome, so the trainer places the
  oracle's rewards exactly where it places MIG's.
* :func:`placebo_annotations`: the batch's MIG step rewards pooled over every step of its scored
  completions, permuted (seeded), and put back into the same step slots: the same multiset, no information.
* :func:`credit_auroc`: the step AUROC of a credit against the task's step validity: positives are the
  first invalid step of each chain (the step the oracle gives 0 first), negatives the valid steps before
  it (steps after the first invalid one are left out: their validity follows from it); score = minus the
  credit, so 1.0 means the credit is lowest exactly at the first invalid steps.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import task  # the folder is package-free
from signal_check import auroc


def problem_of(question: str) -> task.Problem:
    """The problem a prompt's question (``"3 7 5 2"``) states."""
    try:
        return task.Problem(tuple(int(token) for token in question.split()))
    except ValueError as error:
        raise ValueError(f"question: expected digits separated by spaces, got {question!r}") from error


def with_step_rewards(annotation: Any, rewards: Sequence[float]) -> Any:
    """``annotation`` with step k's reward set to ``rewards[k]`` (process_reward and max_reward follow);
    steps, spans, v_k, mig_k and the outcome unchanged."""
    if len(rewards) != len(annotation.steps):
        raise ValueError(f"rewards: {len(rewards)} values for {len(annotation.steps)} steps")
    steps = [
        step.model_copy(update={"reward": float(value)})
        for step, value in zip(annotation.steps, rewards, strict=True)
    ]
    return annotation.model_copy(
        update={
            "steps": steps,
            "process_reward": float(sum(rewards)),
            "max_reward": float(max(rewards, default=0.0)),
        }
    )


def oracle_rewards(annotation: Any, problem: task.Problem) -> list[float]:
    """The task's grading of the annotation's own steps (its segmentation: one step per line)."""
    return task.oracle_step_rewards(problem, [step.text for step in annotation.steps])


def oracle_annotation(annotation: Any | None, problem: task.Problem) -> Any | None:
    if annotation is None:
        return None
    return with_step_rewards(annotation, oracle_rewards(annotation, problem))


def placebo_annotations(annotations: Sequence[Any | None], rng: random.Random) -> list[Any | None]:
    """The batch's step rewards permuted across its completions' steps. When the rewards are not all equal,
    the permutation is redrawn (then rotated) until some step's reward differs from its own."""
    pooled = [step.reward for a in annotations if a is not None for step in a.steps]
    shuffled = list(pooled)
    rng.shuffle(shuffled)
    if len(set(pooled)) > 1:
        for _ in range(len(pooled)):
            if shuffled != pooled:
                break
            shuffled = shuffled[1:] + shuffled[:1]
    values = iter(shuffled)
    return [None if a is None else with_step_rewards(a, [next(values) for _ in a.steps]) for a in annotations]


def credit_auroc(
    annotations: Sequence[Any | None], problems: Sequence[task.Problem], field: str = "mig"
) -> dict[str, float | int | None]:
    """The step AUROC of ``-step.<field>`` (``mig``: mig_k; ``reward``: r_k) against the task's validity
    over ``annotations`` (None: unscored, skipped) of the completions of ``problems``; ``auroc`` is None
    without a positive or a negative."""
    positives: list[float] = []
    negatives: list[float] = []
    for annotation, problem in zip(annotations, problems, strict=True):
        if annotation is None:
            continue
        labels = oracle_rewards(annotation, problem)
        for step, valid in zip(annotation.steps, labels, strict=True):
            score = -float(getattr(step, field))
            if valid:
                negatives.append(score)
            else:
                positives.append(score)
                break
    value = auroc(positives, negatives) if positives and negatives else None
    return {"auroc": value, "first_invalid_steps": len(positives), "valid_steps": len(negatives)}
