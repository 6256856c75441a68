"""The service refuses what the schema refuses, naming the field: no reasoning text, non-finite numbers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.fake_server import TIMEOUT_S, fake_service

TRACE = {"id": "a", "question": "What is 1 + 1?", "reference_answer": "2"}


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit")


@pytest.fixture(scope="module")
def url(audit_dir: Path) -> Iterator[str]:
    with fake_service(audit_dir, audit_flush_s=0.2) as base:
        yield base


def _fields(response: httpx.Response) -> list[str]:
    return [item["field"] for item in response.json()["fields"]]


@pytest.mark.parametrize(
    ("reasoning", "field"),
    [
        ({"completion": ""}, "traces[1].completion"),
        ({"completion": "  \n\t "}, "traces[1].completion"),
        ({"steps": []}, "traces[1].steps"),
        ({"steps": [""]}, "traces[1].steps[0]"),
        ({"steps": ["1 + 1 = 2", " "]}, "traces[1].steps[1]"),
    ],
)
def test_a_trace_without_reasoning_text_is_its_error_and_with_strict_a_422_naming_the_field(
    url: str, audit_dir: Path, reasoning: dict[str, object], field: str
) -> None:
    good = TRACE | {"id": "good", "completion": "1 + 1 = 2\nA: 2"}
    traces = [good, TRACE | reasoning]
    response = httpx.post(
        timeout=TIMEOUT_S, url=f"{url}/v1/annotate", json={"traces": traces, "strict": True}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert _fields(response) == [field]
    assert field in response.json()["message"]
    response = httpx.post(timeout=TIMEOUT_S, url=f"{url}/v1/annotate", json={"traces": traces})
    assert response.status_code == 200, response.text
    assert response.json()["annotations"][1] is None
    assert [(e["index"], e["field"], e["code"]) for e in response.json()["errors"]] == [
        (1, field, "invalid_trace")
    ]


def test_an_openrlhf_query_with_no_response_gets_the_fallback_reward_alone(url: str) -> None:
    body = {
        "query": ["Q: 1+1?", "Q: 2+2? 4", "Q: 3+3?  <|im_end|>"],
        "prompts": ["Q: 1+1?", "Q: 2+2?", "Q: 3+3?"],
    }
    response = httpx.post(
        timeout=TIMEOUT_S, url=f"{url}/v1/openrlhf/reward", json=body | {"labels": ["2", "4", "6"]}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["extra_logs"]["failed"] == [1.0, 0.0, 1.0]  # the queries with no response, alone
    assert answer["rewards"][0] == answer["rewards"][2] == 0.0  # MIG_OPENRLHF_FALLBACK_REWARD's default
    assert answer["extra_logs"]["steps"] == [0.0, 1.0, 0.0]  # the middle query was scored


def test_an_empty_openrlhf_query_list_names_query(url: str) -> None:
    response = httpx.post(
        timeout=TIMEOUT_S, url=f"{url}/v1/openrlhf/reward", json={"query": [], "prompts": [], "labels": []}
    )
    assert response.status_code == 422
    assert _fields(response) == ["query"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_a_422_naming_the_field(url: str, literal: str) -> None:
    trace = '{"id": "a", "question": "q", "completion": "x\\nA: 2", "reference_answer": "2"}'
    body = f'{{"trace": {trace}, "config": {{"sft_threshold": {literal}}}}}'
    response = httpx.post(
        timeout=TIMEOUT_S,
        url=f"{url}/v1/annotate",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert _fields(response) == ["config.sft_threshold"]
    metadata = trace.replace(
        '"reference_answer"', f'"metadata": {{"p": [0.5, {literal}]}}, "reference_answer"'
    )
    response = httpx.post(
        timeout=TIMEOUT_S,
        url=f"{url}/v1/annotate",
        content=f'{{"trace": {metadata}}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "metadata.p[1]: must be a finite number" in response.json()["message"]
    assert _fields(response) == ["trace.metadata"]


def test_refused_traces_never_reach_the_audit_log(url: str, audit_dir: Path) -> None:
    from mig_annotator.builder.audit.database import AuditDatabase, discover_sources

    good = TRACE | {"id": "kept", "completion": "1 + 1 = 2\nA: 2"}
    assert httpx.post(timeout=TIMEOUT_S, url=f"{url}/v1/annotate", json={"trace": good}).status_code == 200
    refused = httpx.post(
        timeout=TIMEOUT_S,
        url=f"{url}/v1/annotate",
        json={"traces": [good | {"id": "empty", "completion": " "}]},
    )
    assert refused.status_code == 200 and refused.json()["annotations"] == [None]
    deadline = time.monotonic() + 30
    while not list(audit_dir.glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    with AuditDatabase(discover_sources([audit_dir])) as db:
        ids = {row[0] for row in db.query("SELECT trace_id FROM annotations").rows}
    assert "kept" in ids and "empty" not in ids


@pytest.mark.parametrize(
    ("option", "field"),
    [
        ({"sft_threshold": False}, "config.sft_threshold"),
        ({"sft_threshold": "0.5"}, "config.sft_threshold"),
        ({"segmenter": None}, "config.segmenter"),
        ({"prompt": {"chat": "true"}}, "config.prompt.chat"),
        ({"prompt": {"header": "no placeholder"}}, "config.prompt"),
    ],
)
def test_options_of_the_wrong_json_type_are_a_422_naming_the_option(
    url: str, option: dict[str, object], field: str
) -> None:
    """The schema says number, enum, boolean: a boolean, a string or a null is not silently converted."""
    trace = TRACE | {"completion": "1 + 1 = 2\nA: 2"}
    response = httpx.post(
        timeout=TIMEOUT_S, url=f"{url}/v1/annotate", json={"trace": trace, "config": option}
    )
    assert response.status_code == 422, response.text
    assert _fields(response) == [field]
    assert (
        httpx.post(
            timeout=TIMEOUT_S, url=f"{url}/v1/annotate", json={"trace": trace, "config": {"sft_threshold": 1}}
        ).status_code
        == 200
    )


def test_a_group_id_is_accepted_a_blank_one_is_no_group_and_a_list_is_the_traces_error(url: str) -> None:
    grouped = [
        TRACE | {"id": f"g{i}", "completion": f"1 + 1 = 2\nA: {i}", "group_id": "uid-1"} for i in range(2)
    ]
    response = httpx.post(timeout=TIMEOUT_S, url=f"{url}/v1/annotate", json={"traces": grouped})
    assert response.status_code == 200, response.text
    assert [a["trace_id"] for a in response.json()["annotations"]] == ["g0", "g1"]
    blank = grouped[0] | {"group_id": " "}
    listed = grouped[0] | {"id": "listed", "group_id": ["uid-1"]}
    body = {"traces": [grouped[1], blank, listed]}
    response = httpx.post(timeout=TIMEOUT_S, url=f"{url}/v1/annotate", json=body)
    assert response.status_code == 200, response.text
    assert [a and a["trace_id"] for a in response.json()["annotations"]] == ["g1", "g0", None]
    [error] = response.json()["errors"]
    assert error["field"] == "traces[2].group_id" and "expected text or an integer" in error["message"]
    response = httpx.post(timeout=TIMEOUT_S, url=f"{url}/v1/annotate", json=body | {"strict": True})
    assert response.status_code == 422, response.text
    assert _fields(response) == ["traces[2].group_id"]


def test_a_decompression_bomb_image_is_its_traces_error_and_the_connection_goes_on(url: str) -> None:
    """A PNG whose header says 50,000 x 50,000 beside two good traces: a 500 for all three, then the next
    request on the same connection was reset."""
    import base64

    from tests.vision_support import png_header

    bomb = "data:image/png;base64," + base64.b64encode(png_header(50_000, 50_000)).decode()
    part = {"type": "image_url", "image_url": {"url": bomb}}
    question = [{"role": "user", "content": [part, {"text": "How many?"}]}]
    good = TRACE | {"completion": "1 + 1 = 2\nA: 2"}
    traces = [good | {"id": "g1"}, good | {"id": "bomb", "question": question}, good | {"id": "g2"}]
    with httpx.Client(timeout=TIMEOUT_S) as client:
        response = client.post(f"{url}/v1/annotate", json={"traces": traces})
        assert response.status_code == 200, response.text
        body = response.json()
        [error] = body["errors"]
        assert (error["index"], error["code"]) == (1, "invalid_trace")
        assert error["field"] == "traces[1]"
        assert error["message"].startswith(
            "question[0].content[0].image_url: over the limit of 16777216 pixels per image"
        )
        assert [a and a["trace_id"] for a in body["annotations"]] == ["g1", None, "g2"]
        again = client.post(f"{url}/v1/annotate", json={"traces": [good]})
        assert again.status_code == 200 and again.json()["annotations"][0]["trace_id"] == "a"


def test_a_request_whose_images_are_over_the_pixel_budget_is_refused_before_any_is_prepared() -> None:
    """64 traces x 8 distinct 4096 x 4095 PNGs (each within every per-image limit) kept the planning
    threads for minutes: a request's image pixels, read from the bytes, are its budget too."""
    import base64

    from tests.vision_support import clevr_scene, png_header

    scene = clevr_scene(1)  # 96 x 64 = 6,144 pixels
    lying = png_header(2000, 2000)  # 4,000,000 pixels whatever a caller declares
    good = TRACE | {"completion": "1 + 1 = 2\nA: 2"}

    def with_image(trace_id: str, data: bytes) -> dict[str, object]:
        part = {"type": "image", "base64": base64.b64encode(data).decode()}
        return good | {"id": trace_id, "question": [{"role": "user", "content": [part, {"text": "Q?"}]}]}

    with fake_service(max_request_image_pixels=20_000) as base:
        within = httpx.post(
            f"{base}/v1/annotate", json={"traces": [with_image("a", scene), good]}, timeout=TIMEOUT_S
        )
        over = httpx.post(
            f"{base}/v1/annotate",
            json={"traces": [with_image("a", scene), with_image("b", lying), good]},
            timeout=TIMEOUT_S,
        )
    assert within.status_code == 200, within.text  # the fake probe reads no images: the image trace's error
    assert [a and a["trace_id"] for a in within.json()["annotations"]] == [None, "a"]
    assert over.status_code == 413, over.text
    body = over.json()
    assert _fields(over) == ["traces[1].images"]
    assert body["message"].startswith(
        "traces[1].images: the request's images hold 4006144 pixels to prepare (this trace's 1 images "
        "4000000), over the limit of 20000 per request (MIG_MAX_REQUEST_IMAGE_PIXELS;"
    )
