"""A ``step_regex`` cannot hold the planning threads: a search over its work limit is refused by name before
any matching, and a search whose request ended is abandoned, so the next request is planned at once."""

from __future__ import annotations

import threading

import httpx
import pytest

from mig_annotator.engine.probe.base import Probe
from mig_annotator.engine.segment.user_regex import MAX_REGEX_WORK
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server, slow_planning_request, small_traces, trace_json


def _regex_request(pattern: str, completion: str, extra: list[dict[str, object]]) -> dict[str, object]:
    heavy = {"id": "heavy", "question": "q?", "completion": completion, "reference_answer": "1"}
    return {
        "traces": [heavy, *extra],
        "config": {"segmenter": "regex", "step_regex": pattern},
        "strict": False,
    }


@pytest.mark.model
def test_a_step_regex_too_costly_for_its_completion_fails_that_trace_by_name(probe: Probe) -> None:
    pattern = "(.*a){1000}"  # valid RE2; on 3.5 MB of "a" it ran for minutes
    completion = "a" * 1_000_000
    light = trace_json(small_traces(1)[0]) | {"completion": "1) a\n2) b\nA: 5"}
    with live_server(create_app(ServiceSettings(audit_enabled=False), probe=probe)) as url:
        answer = httpx.post(
            f"{url}/v1/annotate", json=_regex_request(pattern, completion, [light]), timeout=60
        )
    assert answer.status_code == 200
    body = answer.json()
    assert body["annotations"][0] is None and body["annotations"][1] is not None
    (error,) = body["errors"]
    assert error["field"] == "traces[0].completion" and error["code"] == "invalid_trace"
    assert "too costly" in error["message"] and f"{MAX_REGEX_WORK:,}" in error["message"]


@pytest.mark.model
def test_planning_of_requests_past_their_deadline_is_abandoned(probe: Probe) -> None:
    """Two requests whose planning (step searches within the work limit) takes several times the deadline
    hold both planning threads until the deadline, not after: a one-line request sent after their 504s is
    planned and answered within its own (equally short) deadline.

    Each heavy request holds 12 searches of about 2 s each on an idle core here (RE2's slow engine, see
    :data:`SLOW_STEP_PATTERN`), against a 3 s deadline: a machine would have to plan 8 times faster than
    this one for a heavy request to finish planning in time."""
    settings = ServiceSettings(audit_enabled=False, request_timeout_s=3.0)
    heavy = slow_planning_request()
    light = {"trace": trace_json(small_traces(1)[0])}
    answers: list[int] = []
    with live_server(create_app(settings, probe=probe)) as url:
        httpx.post(f"{url}/v1/annotate", json=light, timeout=60)  # warm-up: the first scoring is slower
        senders = [
            threading.Thread(
                target=lambda: answers.append(
                    httpx.post(f"{url}/v1/annotate", json=heavy, timeout=60).status_code
                )
            )
            for _ in range(2)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        after = httpx.post(f"{url}/v1/annotate", json=light, timeout=60)
    assert answers == [504, 504]
    assert after.status_code == 200, after.text
