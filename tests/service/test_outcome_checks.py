"""Outcome checks run in a worker process with a hard limit: a pathological answer cannot hang the service."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from mig_annotator.mig.probe.base import Probe
from mig_annotator.service.app import create_app
from mig_annotator.service.outcome import OutcomeChecker
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server

PATHOLOGICAL = "10^{10^{10^{10}}}"  # math-verify blocks on this for many seconds (forever in a thread)


@pytest.fixture(scope="module")
def timeouts() -> list[float]:
    return []


@pytest.fixture(scope="module")
def checker(timeouts: list[float]) -> Iterator[OutcomeChecker]:
    checker = OutcomeChecker(timeout_s=1.0, on_timeout=lambda: timeouts.append(time.monotonic()))
    checker.start()
    yield checker
    checker.close()


def test_equivalent_answers_are_correct_and_others_not(checker: OutcomeChecker) -> None:
    assert checker.check("18", "18.0") == 1
    assert checker.check("\\frac{1}{2}", "0.5") == 1
    assert checker.check("1,000", "1000") == 1
    assert checker.check("19", "18") == 0
    assert checker.check(None, "18") == 0
    assert checker.check("   ", "18") == 0


def test_a_pathological_answer_is_cut_off_as_wrong_and_the_next_check_works(
    checker: OutcomeChecker, timeouts: list[float]
) -> None:
    started = time.monotonic()
    assert checker.check(PATHOLOGICAL, "10^{10^{10^{9}}}") == 0
    assert time.monotonic() - started < 10
    assert len(timeouts) == 1
    assert checker.check("42", "42") == 1  # a fresh worker took over


@pytest.mark.model
def test_the_service_answers_a_pathological_trace_with_outcome_0(probe: Probe) -> None:
    settings = ServiceSettings(outcome_timeout_s=1.0, audit_enabled=False)
    trace = {
        "id": "tower",
        "question": "What is 10 to the power 10 to the power 10 to the power 9?",
        "completion": f"Stack the powers.\nA: {PATHOLOGICAL}",
        "reference_answer": "10^{10^{10^{9}}}",
    }
    with live_server(create_app(settings, probe=probe)) as url:
        started = time.monotonic()
        response = httpx.post(f"{url}/v1/annotate", json={"trace": trace}, timeout=120)
        assert response.status_code == 200
        assert time.monotonic() - started < 60
        annotation = response.json()["annotations"][0]
        assert annotation["answer"] == PATHOLOGICAL and annotation["outcome"] == 0
        metrics = httpx.get(f"{url}/metrics").text
        assert "mig_outcome_timeouts_total 1.0" in metrics
        ok = {**trace, "id": "ok", "completion": "Two and two.\nA: 4", "reference_answer": "4"}
        assert (
            httpx.post(f"{url}/v1/annotate", json={"trace": ok}, timeout=120).json()["annotations"][0][
                "outcome"
            ]
            == 1
        )
