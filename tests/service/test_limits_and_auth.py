"""Limits, strict schemas, API keys and CORS: every refusal is a clear 4xx naming the field, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from mig_annotator.engine.probe.base import Probe
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server, small_traces, trace_json

pytestmark = pytest.mark.model

KEY = "sk-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def url(probe: Probe) -> Iterator[str]:
    settings = ServiceSettings(
        api_keys={"trainer-a": KEY, "trainer-b": "sk-other"},
        max_body_bytes=20_000,
        max_traces_per_request=3,
        max_steps_per_trace=4,
        max_tokens_per_trace=120,
        cors_origins=["https://dashboard.example"],
        audit_enabled=False,
    )
    with live_server(create_app(settings, probe=probe)) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120) as client:
        yield client


def _fields(response: httpx.Response) -> list[str]:
    return [item["field"] for item in response.json()["fields"]]


def _one(**overrides: object) -> dict[str, object]:
    return {"trace": {**trace_json(small_traces(2)[1]), **overrides}}


def test_without_a_key_the_api_answers_401_with_a_bearer_challenge(client: httpx.Client) -> None:
    response = client.post("/v1/annotate", json=_one())
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"
    assert client.get("/v1/info").status_code == 401


def test_an_unknown_key_gets_403(client: httpx.Client) -> None:
    response = client.post("/v1/annotate", json=_one(), headers={"Authorization": "Bearer sk-wrong"})
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_a_known_key_is_served_and_health_endpoints_need_none(client: httpx.Client) -> None:
    response = client.post("/v1/annotate", json=_one(), headers=AUTH)
    assert response.status_code == 200
    assert response.json()["annotations"][0]["outcome"] == 1
    assert (
        client.get("/v1/info", headers={"Authorization": "Bearer sk-other"}).json()["auth_required"] is True
    )
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_a_body_over_the_limit_is_413_naming_the_body(client: httpx.Client) -> None:
    big = _one(question="How many? " + "x" * 25_000)
    response = client.post("/v1/annotate", json=big, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert _fields(response) == ["body"]


def test_a_streamed_body_over_the_limit_is_413_too(client: httpx.Client) -> None:
    chunks = (b"x" * 5_000 for _ in range(6))  # no Content-Length: chunked transfer
    response = client.post(
        "/v1/annotate", content=chunks, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_too_many_traces_is_413_naming_traces(client: httpx.Client) -> None:
    body = {"traces": [trace_json(t) for t in small_traces(4)]}
    response = client.post("/v1/annotate", json=body, headers=AUTH)
    assert response.status_code == 413
    assert _fields(response) == ["traces"]
    assert "MIG_MAX_TRACES_PER_REQUEST" in response.json()["message"]


def test_too_many_explicit_steps_is_422_naming_the_trace_and_field(client: httpx.Client) -> None:
    traces = small_traces(2)
    steps = {"id": "s", "question": "1+1?", "steps": ["a"] * 5, "reference_answer": "2"}
    body = {"traces": [trace_json(traces[0]), steps], "strict": True}
    response = client.post("/v1/annotate", json=body, headers=AUTH)
    assert response.status_code == 422
    assert _fields(response) == ["traces[1].steps"]
    assert "5 steps" in response.json()["message"]


def test_too_many_segmented_steps_is_422_naming_the_completion(client: httpx.Client) -> None:
    completion = "\n".join(f"Step line {i}." for i in range(6)) + "\nA: 2"
    response = client.post("/v1/annotate", json=_one(completion=completion), headers=AUTH)
    assert response.status_code == 422
    assert _fields(response) == ["trace.completion"]


def test_too_many_tokens_is_422_naming_the_completion(client: httpx.Client) -> None:
    completion = "We add the numbers " + "one and then another " * 30 + "together.\nA: 5"
    body = {
        "traces": [
            trace_json(small_traces(1)[0]),
            {**trace_json(small_traces(1)[0]), "completion": completion},
        ],
        "strict": True,
    }
    response = client.post("/v1/annotate", json=body, headers=AUTH)
    assert response.status_code == 422
    assert _fields(response) == ["traces[1].completion"]
    assert "MIG_MAX_TOKENS_PER_TRACE" in response.json()["message"]


def test_unknown_fields_are_rejected_at_every_level(client: httpx.Client) -> None:
    top = client.post("/v1/annotate", json={**_one(), "priority": 1}, headers=AUTH)
    assert top.status_code == 422 and _fields(top) == ["priority"]
    inner = client.post("/v1/annotate", json=_one(score_hint=3), headers=AUTH)
    assert inner.status_code == 422 and _fields(inner) == ["trace.score_hint"]
    option = client.post("/v1/annotate", json={**_one(), "config": {"temperature": 0.5}}, headers=AUTH)
    assert option.status_code == 422 and _fields(option) == ["config.temperature"]


def test_invalid_values_name_their_field(client: httpx.Client) -> None:
    missing = client.post(
        "/v1/annotate", json={"trace": {"id": "x", "question": "q", "completion": "c"}}, headers=AUTH
    )
    assert missing.status_code == 422 and _fields(missing) == ["trace.reference_answer"]
    wrong_traces = [{**trace_json(small_traces(1)[0]), "steps": 3}]
    wrong_type = client.post("/v1/annotate", json={"traces": wrong_traces, "strict": True}, headers=AUTH)
    assert wrong_type.status_code == 422 and "traces[0].steps" in _fields(wrong_type)
    per_trace = client.post("/v1/annotate", json={"traces": wrong_traces}, headers=AUTH)
    assert per_trace.status_code == 200 and per_trace.json()["annotations"] == [None]
    assert per_trace.json()["errors"][0]["field"].startswith("traces[0].")
    empty = client.post("/v1/annotate", json={"traces": []}, headers=AUTH)
    assert empty.status_code == 422 and _fields(empty) == ["traces"]
    both = client.post(
        "/v1/annotate", json={**_one(), "traces": [trace_json(small_traces(1)[0])]}, headers=AUTH
    )
    assert both.status_code == 422 and _fields(both) == ["body"]
    assert "exactly one of `trace` or `traces`" in both.json()["message"]
    bad_option = client.post("/v1/annotate", json={**_one(), "config": {"segmenter": "regex"}}, headers=AUTH)
    assert bad_option.status_code == 422 and _fields(bad_option) == ["config"]
    assert "step_regex is required" in bad_option.json()["message"]


def test_malformed_json_is_400_not_a_server_error(client: httpx.Client) -> None:
    for raw in (b"{", b'{"trace": ', b"\xff\xfe", b"[1, 2", json.dumps(_one()).encode()[:-3]):
        response = client.post(
            "/v1/annotate", content=raw, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert response.status_code == 400, raw
        assert response.json()["error"] == "invalid_json"
        assert _fields(response) == ["body"]


def test_deeply_nested_json_is_refused_without_a_server_error(client: httpx.Client) -> None:
    nested = (
        b'{"trace": {"id": "x", "question": "q", "completion": "c", "reference_answer": "1", "metadata": '
    )
    nested += b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}}"
    response = client.post(
        "/v1/annotate", content=nested, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)


def test_text_that_is_not_unicode_is_422_naming_the_field(client: httpx.Client) -> None:
    raw = json.dumps(_one()).replace('"Sam has', '"\\ud800 Sam has', 1).encode()
    response = client.post("/v1/annotate", content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422
    assert _fields(response) == ["trace.question"]


def test_a_blank_reference_answer_is_422(client: httpx.Client) -> None:
    response = client.post("/v1/annotate", json=_one(reference_answer="  "), headers=AUTH)
    assert response.status_code == 422 and _fields(response) == ["trace.reference_answer"]


def test_cors_allows_only_the_configured_origin(client: httpx.Client, service_url: str) -> None:
    preflight = {"Origin": "https://dashboard.example", "Access-Control-Request-Method": "POST"}
    allowed = client.options("/v1/annotate", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "https://dashboard.example"
    other = client.options("/v1/annotate", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # the default service has CORS off: no CORS headers at all
    default = httpx.get(f"{service_url}/healthz", headers={"Origin": "https://dashboard.example"})
    assert "access-control-allow-origin" not in default.headers


def test_no_request_above_got_a_server_error(client: httpx.Client) -> None:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("mig_requests_total{"):
            assert 'status="5' not in line, line
