"""The chain-arithmetic task: a deterministic, seeded generator with disjoint train / held-out splits.

A problem is a left-to-right chain of additions and subtractions of digits modulo 10 (single-digit
values keep the character-level policy small and quick to train), for example ``7+5-8+6``. A correct
demonstration states one partial result per line and ends in an answer line the engine's answer checker
reads (the ``A: N`` marker of the shared GSM8K rollouts)::

    7+5=2
    2-8=4
    4+6=0
    A: 0

Every partial result constrains the answer (the last one states it), so step credit can matter.
:func:`corrupt` injects one wrong step (a partial result off by 1-3, modulo 10) and recomputes every later
step from it, so the later steps are locally right, the chain is consistent, and the final answer is wrong
(a shift by d of one partial result shifts every later one, the answer included, by d).

The split is a pure function of the question text (a hash), so train and held-out problems never share a
question whatever the seeds. 3-4 operations give about 58,000 + 1,050,000 distinct questions.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

MIN_OPS, MAX_OPS = 3, 4
MODULUS = 10
HELD_OUT_SHARE = 5  # one question in five belongs to the held-out split
STEP_PATTERN = re.compile(r"^(\d)([+-])(\d)=(\d)$")


@dataclass(frozen=True, slots=True)
class Problem:
    """A chain ``start op1 n1 op2 n2 ...`` and its reference answer."""

    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def question(self) -> str:
        return str(self.start) + "".join(f"{op}{operand}" for op, operand in self.ops)

    @property
    def answer(self) -> int:
        return self.partial_results()[-1]

    def partial_results(self) -> list[int]:
        values, value = [], self.start
        for op, operand in self.ops:
            value = apply(value, op, operand)
            values.append(value)
        return values


@dataclass(frozen=True, slots=True)
class Demonstration:
    """A worked solution: one step per line, then the answer line.

    ``wrong_step``: 0-based index of the injected wrong step, None if clean."""

    problem: Problem
    steps: tuple[str, ...]
    answer: int
    wrong_step: int | None = None

    @property
    def completion(self) -> str:
        return "\n".join((*self.steps, f"A: {self.answer}"))

    @property
    def is_correct(self) -> bool:
        return self.answer == self.problem.answer


def apply(value: int, op: str, operand: int) -> int:
    return (value + operand if op == "+" else value - operand) % MODULUS


def split_of(question: str) -> str:
    """``"held_out"`` or ``"train"``, decided by a hash of the question alone."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "held_out" if digest[0] % HELD_OUT_SHARE == 0 else "train"


def random_problem(rng: random.Random) -> Problem:
    n_ops = rng.randint(MIN_OPS, MAX_OPS)
    start = rng.randint(0, MODULUS - 1)
    ops = tuple((rng.choice("+-"), rng.randint(1, MODULUS - 1)) for _ in range(n_ops))
    return Problem(start, ops)


def problems(split: str, count: int, seed: int) -> list[Problem]:
    """``count`` distinct problems of ``split`` ("train" or "held_out"), the same for the same seed."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split: expected 'train' or 'held_out', got {split!r}")
    rng = random.Random(f"mig-vs-grpo/{split}/{seed}")
    found: dict[str, Problem] = {}
    attempts = 0
    while len(found) < count:
        attempts += 1
        if attempts > 200 * count + 10_000:
            raise ValueError(f"count: only {len(found)} distinct {split} problems found, {count} asked")
        problem = random_problem(rng)
        if split_of(problem.question) == split:
            found.setdefault(problem.question, problem)
    return list(found.values())


def demonstrate(problem: Problem) -> Demonstration:
    """The correct worked solution."""
    return _chain(problem, wrong_step=None, delta=0)


def corrupt(problem: Problem, rng: random.Random) -> Demonstration:
    """A demonstration with one wrong step (its result off by 1-3, mod 10), every later step consistent
    with it."""
    wrong_step = rng.randrange(len(problem.ops))
    return _chain(problem, wrong_step=wrong_step, delta=rng.choice((-3, -2, -1, 1, 2, 3)))


def _chain(problem: Problem, wrong_step: int | None, delta: int) -> Demonstration:
    steps, value = [], problem.start
    for index, (op, operand) in enumerate(problem.ops):
        result = (apply(value, op, operand) + (delta if index == wrong_step else 0)) % MODULUS
        steps.append(f"{value}{op}{operand}={result}")
        value = result
    return Demonstration(problem, tuple(steps), value, wrong_step)


def step_is_valid(step: str) -> bool:
    """Whether one step line ``a op b = c`` is arithmetically right on its own."""
    match = STEP_PATTERN.match(step)
    if match is None:
        return False
    left, op, operand, result = match.groups()
    return apply(int(left), op, int(operand)) == int(result)


def parse_answer(completion: str) -> int | None:
    """The integer on the last ``A: N`` line, or None (what a policy's sample is graded on)."""
    for line in reversed(completion.strip().splitlines()):
        match = re.fullmatch(r"A:\s*(-?\d+)\s*", line.strip())
        if match:
            return int(match.group(1))
    return None


def demonstration_mix(problems_: list[Problem], corrupted_share: float, seed: int) -> list[Demonstration]:
    """One demonstration per problem, a ``corrupted_share`` of them corrupted (seeded): imperfect SFT data."""
    rng = random.Random(f"mig-vs-grpo/mix/{seed}")
    return [corrupt(p, rng) if rng.random() < corrupted_share else demonstrate(p) for p in problems_]
