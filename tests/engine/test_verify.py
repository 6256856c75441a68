"""The answer verifier: math-aware checks in killable worker processes, a few at a time, within deadlines."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mig_annotator.engine.verify import ProcessVerifier, VerifierUnavailable, worker_environment

PATHOLOGICAL = "10^{10^{10^{10}}}"  # math-verify blocks on this for many seconds (forever in a thread)


@pytest.fixture(scope="module")
def timeouts() -> list[float]:
    return []


@pytest.fixture(scope="module")
def verifier(timeouts: list[float]) -> Iterator[ProcessVerifier]:
    verifier = ProcessVerifier(workers=2, timeout_s=1.0, on_timeout=lambda: timeouts.append(time.monotonic()))
    verifier.start()
    yield verifier
    verifier.close()


def test_equivalent_answers_are_correct_and_others_not(verifier: ProcessVerifier) -> None:
    pairs = [
        ("18", "18.0"),
        ("\\frac{1}{2}", "0.5"),
        ("1,000", "1000"),
        ("19", "18"),
        (None, "18"),
        ("  ", "1"),
    ]
    assert verifier.check_many(pairs) == [1, 1, 1, 0, 0, 0]


def test_a_pathological_answer_is_cut_off_as_wrong_and_the_next_check_works(
    verifier: ProcessVerifier, timeouts: list[float]
) -> None:
    before = len(timeouts)
    started = time.monotonic()
    assert verifier.check(PATHOLOGICAL, "10^{10^{10^{9}}}") == 0
    assert time.monotonic() - started < 10
    assert len(timeouts) == before + 1
    assert verifier.check("42", "42") == 1  # a fresh worker took over
    verifier.start()  # waits for the background refill
    assert len(verifier.worker_pids) >= 1


def test_slow_answers_are_checked_side_by_side_not_one_after_another(verifier: ProcessVerifier) -> None:
    """Two pathological answers on two workers cost about one time limit (1 s), not two.

    Bound: under 1.9 s (two serial limits would be >= 2.0 s plus respawns); the behaviour checked is that
    slow answer checks do not serialise, so this test measures it, generously.
    """
    verifier.start()  # both workers up (after earlier tests' timeouts), so only the checks are timed
    started = time.monotonic()
    verdicts = verifier.check_many([(PATHOLOGICAL, "1"), (PATHOLOGICAL, "2")])
    elapsed = time.monotonic() - started
    assert verdicts == [0, 0]
    assert elapsed < 1.9, f"two slow checks took {elapsed:.2f}s: they ran one after another"


def test_a_passed_deadline_cuts_checks_short_without_counting_a_timeout(
    verifier: ProcessVerifier, timeouts: list[float]
) -> None:
    before = len(timeouts)
    verifier.start()
    started = time.monotonic()
    assert verifier.check(PATHOLOGICAL, "1", deadline=time.monotonic() + 0.2) == 0
    assert time.monotonic() - started < 0.9  # the caller's deadline (0.2 s), not the 1 s limit
    assert verifier.check("7", "7", deadline=time.monotonic() - 1) == 0  # nobody waits: not even started
    assert len(timeouts) == before


def test_workers_do_not_inherit_the_services_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIG_API_KEYS", '{"trainer": "sk-secret"}')
    monkeypatch.setenv("MIG_PROBE__API_KEY", "sk-vllm")
    assert not any(name.startswith("MIG_") for name in worker_environment())
    with ProcessVerifier(workers=1, timeout_s=5.0) as verifier:
        verifier.start()
        (pid,) = verifier.worker_pids
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert "MIG_API_KEYS" not in names and "MIG_PROBE__API_KEY" not in names
    assert "PATH" in names and os.environ["MIG_API_KEYS"] == '{"trainer": "sk-secret"}'


def test_a_closed_verifier_refuses_work_and_leaves_no_process() -> None:
    verifier = ProcessVerifier(workers=1, timeout_s=5.0)
    verifier.start()
    (pid,) = verifier.worker_pids
    verifier.close()
    assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
    with pytest.raises(VerifierUnavailable):
        verifier.check("1", "1")
