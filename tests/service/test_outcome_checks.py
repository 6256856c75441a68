"""Answer checks in the service: a pathological answer cannot hang it, and slow checks do not serialise."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from mig_annotator.engine.probe.base import Probe
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server

PATHOLOGICAL = "10^{10^{10^{10}}}"  # math-verify blocks on this for many seconds (forever in a thread)


def _trace(trace_id: str, answer: str, reference: str) -> dict[str, str]:
    return {
        "id": trace_id,
        "question": "What is 10 to the power 10 to the power 10 to the power 9?",
        "completion": f"Stack the powers.\nA: {answer}",
        "reference_answer": reference,
    }


@pytest.mark.model
def test_the_service_answers_a_pathological_trace_with_outcome_0(probe: Probe) -> None:
    settings = ServiceSettings(outcome_timeout_s=1.0, audit_enabled=False)
    trace = _trace("tower", PATHOLOGICAL, "10^{10^{10^{9}}}")
    with live_server(create_app(settings, probe=probe)) as url:
        started = time.monotonic()
        response = httpx.post(f"{url}/v1/annotate", json={"trace": trace}, timeout=120)
        assert response.status_code == 200
        assert time.monotonic() - started < 60
        annotation = response.json()["annotations"][0]
        assert annotation["answer"] == PATHOLOGICAL and annotation["outcome"] == 0
        metrics = httpx.get(f"{url}/metrics").text
        assert "mig_outcome_timeouts_total 1.0" in metrics
        ok = _trace("ok", "4", "4")
        answer = httpx.post(f"{url}/v1/annotate", json={"trace": ok}, timeout=120).json()
        assert answer["annotations"][0]["outcome"] == 1


@pytest.mark.model
def test_slow_answer_checks_do_not_hold_up_a_valid_request_behind_them(probe: Probe) -> None:
    """Four pathological answers (each cut off at 2 s) and a valid request sent right after them.

    Before: one checker checked answers one at a time, so four took ~4 x the limit and the valid request
    waited behind all of them (22.8 s measured). Now four workers check them side by side, so everything
    is answered in about one limit plus the probe time. Bound: the valid request completes in under
    3 x 2 s + 10 s of probe slack on a loaded 2-core machine, well under the serial 4 x 2 s + probe time
    plus respawns the old design needed; and the slow ones still come back as outcome 0.
    """
    settings = ServiceSettings(outcome_timeout_s=2.0, verifier_workers=4, audit_enabled=False)
    slow = {"traces": [_trace(f"slow-{k}", PATHOLOGICAL, "1") for k in range(4)]}
    valid = {"trace": _trace("valid", "4", "4")}
    with live_server(create_app(settings, probe=probe)) as url:
        httpx.post(f"{url}/v1/annotate", json=valid, timeout=120).raise_for_status()  # warm everything
        slow_answer: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: slow_answer.append(httpx.post(f"{url}/v1/annotate", json=slow, timeout=120))
        )
        sender.start()
        time.sleep(0.3)
        started = time.monotonic()
        response = httpx.post(f"{url}/v1/annotate", json=valid, timeout=120)
        waited = time.monotonic() - started
        sender.join()
    assert response.status_code == 200 and response.json()["annotations"][0]["outcome"] == 1
    assert [a["outcome"] for a in slow_answer[0].json()["annotations"]] == [0, 0, 0, 0]
    assert waited < 16.0, f"a valid request waited {waited:.1f}s behind four slow answer checks"
