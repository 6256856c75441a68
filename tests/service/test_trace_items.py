"""One trace's bad field is that trace's error, not the request's: a live service on 127.0.0.1
over the package's fake probe; the envelope (not a list, too many traces, unknown keys) is still a 422/413,
and ``strict`` keeps the whole-request 422."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.service.fake_server import TIMEOUT_S, fake_service

TRACES = [
    {"id": f"t{i}", "question": "What is 1 + 1?", "completion": "1 + 1 = 2\nA: 2", "reference_answer": "2"}
    for i in range(3)
]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fake_service(max_traces_per_request=4) as base:
        yield base


def _post(url: str, body: object) -> httpx.Response:
    return httpx.post(timeout=TIMEOUT_S, url=f"{url}/v1/annotate", json=body)


def test_one_empty_reference_answer_among_three_traces_is_that_traces_error_and_the_others_are_scored(
    url: str,
) -> None:
    traces = [TRACES[0], TRACES[1] | {"reference_answer": ""}, TRACES[2]]
    response = _post(url, {"traces": traces})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [a and a["trace_id"] for a in answer["annotations"]] == ["t0", None, "t2"]
    assert answer["errors"] == [
        {
            "index": 1,
            "field": "traces[1].reference_answer",
            "message": "must not be empty or whitespace",
            "code": "invalid_trace",
        }
    ]
    alone = _post(url, {"traces": [TRACES[0]]}).json()["annotations"][0]
    assert answer["annotations"][0] == alone  # the bad neighbour changes nothing


def test_with_strict_the_same_request_is_a_422_naming_the_field(url: str) -> None:
    traces = [TRACES[0], TRACES[1] | {"reference_answer": ""}, TRACES[2]]
    response = _post(url, {"traces": traces, "strict": True})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert [f["field"] for f in response.json()["fields"]] == ["traces[1].reference_answer"]


def test_every_kind_of_field_problem_is_per_trace_and_names_the_field(url: str) -> None:
    traces = [
        TRACES[0] | {"question": 5},
        TRACES[1] | {"unknown": 1},
        {"id": "no-answer", "question": "q", "completion": "c"},
        TRACES[2],
    ]
    answer = _post(url, {"traces": traces}).json()
    assert [a and a["trace_id"] for a in answer["annotations"]] == [None, None, None, "t2"]
    assert [(e["index"], e["field"]) for e in answer["errors"]] == [
        (0, "traces[0].question"),
        (1, "traces[1].unknown"),
        (2, "traces[2].reference_answer"),
    ]


def test_envelope_problems_still_refuse_the_request(url: str) -> None:
    assert _post(url, {"traces": TRACES[0]}).status_code == 422  # not a list
    assert _post(url, {"traces": ["not an object"]}).status_code == 422
    assert _post(url, {"traces": TRACES, "extra": 1}).status_code == 422
    bad = TRACES[0] | {"reference_answer": ""}
    too_many = _post(url, {"traces": [bad] * 5})
    assert too_many.status_code == 413, too_many.text  # counted with the bad ones
    assert _post(url, {"trace": bad}).status_code == 422  # a single trace is always strict
