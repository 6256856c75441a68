"""One bad trace never costs the others: per-trace errors in place, `strict` keeps all or nothing.

A live service (real uvicorn on 127.0.0.1) over the deterministic fake probe, whose tokenizer has one token
per character, so the token limit below is exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.client.support import fake_probe
from tests.service.support import live_server, small_traces, trace_json

TOKEN_LIMIT = 400
LONG_COMPLETION = "We add the numbers " + "one and then another " * 30 + "together.\nA: 5"


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    settings = ServiceSettings(
        max_tokens_per_trace=TOKEN_LIMIT, audit_enabled=False, openrlhf_fallback_reward=-1.0
    )
    with live_server(create_app(settings, probe=fake_probe())) as base_url:
        yield base_url


def good_and_long() -> list[dict[str, object]]:
    good = trace_json(small_traces(1, prefix="good-")[0])
    return [good, {**good, "id": "long", "completion": LONG_COMPLETION}]


def test_a_good_and_an_over_long_trace_get_an_annotation_and_an_error_naming_the_field(url: str) -> None:
    before = metric(url, 'mig_trace_failures_total{code="invalid_trace"}')
    good, long = good_and_long()
    response = httpx.post(f"{url}/v1/annotate", json={"traces": [good, long]}, timeout=60)
    assert response.status_code == 200
    body = response.json()
    alone = httpx.post(f"{url}/v1/annotate", json={"trace": good}, timeout=60).json()["annotations"][0]
    assert body["annotations"][0] == alone
    assert body["annotations"][1] is None
    (error,) = body["errors"]
    assert (error["index"], error["field"], error["code"]) == (1, "traces[1].completion", "invalid_trace")
    assert "MIG_MAX_TOKENS_PER_TRACE" in error["message"]
    assert metric(url, 'mig_trace_failures_total{code="invalid_trace"}') == before + 1


def test_strict_keeps_all_or_nothing_with_422_naming_the_field(url: str) -> None:
    response = httpx.post(f"{url}/v1/annotate", json={"traces": good_and_long(), "strict": True}, timeout=60)
    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == ["traces[1].completion"]


def test_a_single_trace_form_is_strict(url: str) -> None:
    response = httpx.post(f"{url}/v1/annotate", json={"trace": good_and_long()[1]}, timeout=60)
    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == ["trace.completion"]


def test_every_trace_bad_gives_every_error_and_no_annotation(url: str) -> None:
    long = good_and_long()[1]
    surrogate = {**long, "id": "steps", "completion": None, "steps": ["fine", "\ud800"]}
    content = json.dumps({"traces": [long, surrogate]})  # ASCII JSON: the lone surrogate as an escape
    response = httpx.post(
        f"{url}/v1/annotate", content=content, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code == 200
    body = response.json()
    assert body["annotations"] == [None, None]
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (0, "traces[0].completion"),
        (1, "traces[1].steps[1]"),
    ]


def test_openrlhf_gives_a_failed_query_the_fallback_reward_and_counts_it(url: str) -> None:
    before = metric(url, "mig_fallback_rewards_total")
    good = small_traces(2, prefix="o-")[1]
    prompt = good.question
    body = {
        "query": ["unrelated text", prompt + good.completion, prompt + LONG_COMPLETION],
        "prompts": ["Q: 2+2?", prompt, prompt],
        "labels": ["4", good.reference_answer, "5"],
    }
    response = httpx.post(f"{url}/v1/openrlhf/reward", json=body, timeout=60)
    assert response.status_code == 200
    answer = response.json()
    alone = httpx.post(
        f"{url}/v1/annotate", json={"trace": {**trace_json(good), "id": "x"}}, timeout=60
    ).json()["annotations"][0]
    assert answer["rewards"][0] == answer["rewards"][2] == -1.0
    assert answer["rewards"][1] == pytest.approx(alone["outcome"] + alone["process_reward"])
    assert answer["extra_logs"]["failed"] == [1.0, 0.0, 1.0]
    assert metric(url, "mig_fallback_rewards_total") == before + 2


def test_past_the_deadline_the_finished_traces_come_back_and_the_rest_are_marked_to_resend() -> None:
    slow = fake_probe()  # the packaged fake: delay_s slows every probe call
    # one trace per micro-batch, each probe call 1.2 s, a 2 s deadline: the first of three traces is
    # scored at about 1.2 s, the second would end at about 2.4 s (0.8 s of slack either way)
    settings = ServiceSettings(request_timeout_s=2.0, micro_batch_tokens=64, audit_enabled=False)
    with live_server(create_app(settings, probe=slow)) as url:
        warm_up = {"trace": trace_json(small_traces(1, prefix="warm-")[0])}
        for _ in range(10):  # the answer checker's worker processes start on first use (may take > 2 s)
            if httpx.post(f"{url}/v1/annotate", json=warm_up, timeout=60).status_code == 200:
                break
        slow.delay_s = 1.2
        traces = [trace_json(t) for t in small_traces(3, prefix="late-")]
        response = httpx.post(f"{url}/v1/annotate", json={"traces": traces}, timeout=60)
        assert response.status_code == 200
        body = response.json()
        assert body["annotations"][0]["trace_id"] == "late-0"
        assert body["annotations"][1:] == [None, None]
        assert [(e["index"], e["field"], e["code"]) for e in body["errors"]] == [
            (1, "traces[1]", "deadline_exceeded"),
            (2, "traces[2]", "deadline_exceeded"),
        ]
        strict = httpx.post(f"{url}/v1/annotate", json={"traces": traces, "strict": True}, timeout=60)
        assert strict.status_code == 504
