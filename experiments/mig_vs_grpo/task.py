"""The elimination task: find the largest of 4-5 distinct digits by a chain of pairwise eliminations.

A deterministic, seeded generator with disjoint train / held-out splits. A correct demonstration is a
knock-out that carries the current best: each line compares it with the next digit and drops the smaller
one, one step per line, then an answer line the engine's answer checker reads (the ``A: N`` marker of the
shared GSM8K rollouts)::

    Q: 3 7 5 2
    3<7 drop 3
    5<7 drop 5
    2<7 drop 2
    A: 7

Every correct step removes a candidate that is not the answer, so it carries information about the
answer (the answer is among the survivors). :func:`corrupt` injects one wrong step: a false comparison
that drops the true maximum (at a step where the maximum wins), and every later step is computed
correctly from the wrong winner, so the chain is consistent after it and the final answer is wrong.

(An earlier version, chains of additions mod 10, was dropped: a probe this small does not compute ahead,
so its v_k moved only at the last step and a wrong step in the middle left no trace: step AUROC 0.47.)

The split is a pure function of the question text (a hash), so train and held-out problems never share a
question whatever the seeds. 4-5 distinct digits give 5,040 + 30,240 distinct questions.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

MIN_CANDIDATES, MAX_CANDIDATES = 4, 5
HELD_OUT_SHARE = 5  # one question in five belongs to the held-out split
STEP_PATTERN = re.compile(r"^(\d)<(\d) drop (\d)$")


@dataclass(frozen=True, slots=True)
class Problem:
    """Distinct digits; the reference answer is the largest."""

    digits: tuple[int, ...]

    @property
    def question(self) -> str:
        return " ".join(str(digit) for digit in self.digits)

    @property
    def answer(self) -> int:
        return max(self.digits)

    @property
    def n_steps(self) -> int:
        return len(self.digits) - 1


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


def split_of(question: str) -> str:
    """``"held_out"`` or ``"train"``, decided by a hash of the question alone."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "held_out" if digest[0] % HELD_OUT_SHARE == 0 else "train"


def random_problem(
    rng: random.Random, candidates: tuple[int, int] = (MIN_CANDIDATES, MAX_CANDIDATES)
) -> Problem:
    return Problem(tuple(rng.sample(range(10), rng.randint(*candidates))))


def problems(
    split: str, count: int, seed: int, candidates: tuple[int, int] = (MIN_CANDIDATES, MAX_CANDIDATES)
) -> list[Problem]:
    """``count`` distinct problems of ``split`` ("train" or "held_out") with ``candidates`` (min, max)
    distinct digits, the same for the same seed."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split: expected 'train' or 'held_out', got {split!r}")
    low, high = candidates
    if not 2 <= low <= high <= 10:
        raise ValueError(f"candidates: expected 2 <= min <= max <= 10 distinct digits, got {candidates}")
    rng = random.Random(f"mig-vs-grpo/{split}/{seed}")
    found: dict[str, Problem] = {}
    attempts = 0
    while len(found) < count:
        attempts += 1
        if attempts > 200 * count + 10_000:
            raise ValueError(f"count: only {len(found)} distinct {split} problems found, {count} asked")
        problem = random_problem(rng, candidates)
        if split_of(problem.question) == split:
            found.setdefault(problem.question, problem)
    return list(found.values())


def demonstrate(problem: Problem) -> Demonstration:
    """The correct worked solution."""
    return _knockout(problem, wrong_step=None)


def corrupt(problem: Problem, rng: random.Random) -> Demonstration:
    """A demonstration whose one wrong step drops the true maximum; every later step consistent with it."""
    return _knockout(problem, wrong_step=rng.choice(steps_won_by_the_maximum(problem)))


def steps_won_by_the_maximum(problem: Problem) -> list[int]:
    """The 0-based steps of the correct knock-out that the maximum takes part in (and wins)."""
    first = problem.digits.index(problem.answer)
    return list(range(max(0, first - 1), problem.n_steps))


def _knockout(problem: Problem, wrong_step: int | None) -> Demonstration:
    best, steps = problem.digits[0], []
    for index, challenger in enumerate(problem.digits[1:]):
        loser, winner = sorted((best, challenger))
        if index == wrong_step:
            loser, winner = winner, loser
        steps.append(f"{loser}<{winner} drop {loser}")
        best = winner
    return Demonstration(problem, tuple(steps), best, wrong_step)


def step_is_valid(step: str) -> bool:
    """Whether one step line ``a<b drop a`` is true on its own."""
    match = STEP_PATTERN.match(step)
    if match is None:
        return False
    smaller, larger, dropped = (int(group) for group in match.groups())
    return smaller < larger and dropped == smaller


def oracle_step_rewards(problem: Problem, steps: list[str]) -> list[float]:
    """The task's own grading of a chain, one value per step: 1.0 for a valid step that keeps the true
    answer alive (``a<b drop a`` with ``a < b``, both still in the running: digits of the problem not yet
    dropped), 0.0 for the first step that is not, and for every step after it."""
    alive = set(problem.digits)
    rewards: list[float] = []
    for step in steps:
        match = STEP_PATTERN.match(step.strip())
        ok = bool(rewards == [] or rewards[-1] == 1.0) and match is not None
        if ok:
            smaller, larger, dropped = (int(group) for group in match.groups())  # type: ignore[union-attr]
            ok = smaller < larger and dropped == smaller and {smaller, larger} <= alive
            alive.discard(smaller)
        rewards.append(1.0 if ok else 0.0)
    return rewards


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
