"""Every error the live service answers is an ErrorResponse (never FastAPI's bare ``{"detail": ...}``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from mig_annotator.schemas.api import ErrorResponse
from tests.service.fake_server import TIMEOUT_S, fake_service

GOOD = {"trace": {"id": "a", "question": "1 + 1?", "completion": "1 + 1 = 2\nA: 2", "reference_answer": "2"}}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fake_service() as base:
        yield base


def _envelope(response: httpx.Response, status: int, error: str) -> ErrorResponse:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = ErrorResponse.model_validate(response.json())  # extra="forbid": no "detail" key
    assert body.error == error
    assert body.request_id == response.headers["x-request-id"]
    return body


def test_a_good_request_still_answers_200(url: str) -> None:
    assert httpx.post(timeout=TIMEOUT_S, url=f"{url}/v1/annotate", json=GOOD).status_code == 200


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deeply_nested_json(url: str, depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    response = httpx.post(timeout=TIMEOUT_S, url=f"{url}/v1/annotate", content=body, headers=JSON)
    error = _envelope(response, 400, "invalid_json")
    assert "nested too deeply" in error.message and [f.field for f in error.fields] == ["body"]


def test_deeply_nested_metadata(url: str) -> None:
    trace = json.dumps(GOOD["trace"])[:-1] + ', "metadata": {"a": ' + "[" * 50_000 + "]" * 50_000 + "}}"
    response = httpx.post(
        timeout=TIMEOUT_S, url=f"{url}/v1/annotate", content=f'{{"trace": {trace}}}', headers=JSON
    )
    assert "nested too deeply" in _envelope(response, 400, "invalid_json").message


def test_invalid_utf8(url: str) -> None:
    response = httpx.post(
        timeout=TIMEOUT_S, url=f"{url}/v1/annotate", content=b'{"trace": "\xff\xfe\xfa"}', headers=JSON
    )
    error = _envelope(response, 400, "invalid_json")
    assert "UTF-8" in error.message and [f.field for f in error.fields] == ["body"]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_paths(url: str, method: str) -> None:
    response = httpx.request(method, f"{url}/v1/nope", json=GOOD, timeout=TIMEOUT_S)
    error = _envelope(response, 404, "not_found")
    assert "/v1/nope" in error.message


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/annotate"), ("PUT", "/v1/annotate"), ("POST", "/healthz")]
)
def test_wrong_methods(url: str, method: str, path: str) -> None:
    response = httpx.request(method, f"{url}{path}", timeout=TIMEOUT_S)
    error = _envelope(response, 405, "method_not_allowed")
    assert method in error.message
    assert response.headers["allow"] in ("POST", "GET")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
@pytest.mark.parametrize("path", ["/v1/annotate", "/v1/openrlhf/reward"])
def test_a_wrong_content_type_says_so(url: str, path: str, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(
        timeout=TIMEOUT_S, url=f"{url}{path}", content=json.dumps(GOOD).encode(), headers=headers
    )
    error = _envelope(response, 415, "unsupported_media_type")
    assert "Content-Type" in error.message and "application/json" in error.message
    assert str(content_type or "no Content-Type was sent") in error.message
    assert [f.field for f in error.fields] == ["Content-Type"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.api+json"])
def test_json_media_types_are_accepted(url: str, content_type: str) -> None:
    response = httpx.post(
        timeout=TIMEOUT_S,
        url=f"{url}/v1/annotate",
        content=json.dumps(GOOD).encode(),
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
