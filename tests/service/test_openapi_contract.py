"""The OpenAPI document carries the rules the service enforces, and declares auth only when it is on."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mig_annotator.schemas.trace import MAX_GROUP_ID_CHARS, NOT_BLANK_PATTERN
from tests.service.fake_server import TIMEOUT_S, fake_service


def _openapi(**settings: Any) -> dict[str, Any]:
    with fake_service(**settings) as url:
        return httpx.get(timeout=TIMEOUT_S, url=f"{url}/openapi.json").json()


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{m.upper()} {p}": op for p, methods in document["paths"].items() for m, op in methods.items()}


@pytest.fixture(scope="module")
def open_document() -> dict[str, Any]:
    return _openapi()


def test_without_keys_the_schema_declares_no_auth(open_document: dict[str, Any]) -> None:
    assert "securitySchemes" not in open_document.get("components", {})
    for name, operation in _operations(open_document).items():
        assert "security" not in operation, name
        assert not {"401", "403"} & set(operation["responses"]), name


def test_with_keys_the_protected_operations_declare_bearer_auth() -> None:
    document = _openapi(api_keys={"ci": "k-123"})
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    operations = _operations(document)
    for name in ("POST /v1/annotate", "POST /v1/openrlhf/reward", "GET /v1/info"):
        assert operations[name]["security"] == [{"HTTPBearer": []}]
        assert {"401", "403"} <= set(operations[name]["responses"])
    for name in ("GET /healthz", "GET /readyz", "GET /metrics"):
        assert "security" not in operations[name]


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    schemas = document["components"]["schemas"]
    return schemas.get(name) or schemas[f"{name}-Input"]


def test_the_request_schemas_carry_every_rule(open_document: dict[str, Any]) -> None:
    trace = _schema(open_document, "Trace")
    for name in ("question", "reference_answer"):
        text = next(b for b in trace["properties"][name]["anyOf"] if b.get("type") == "string")
        assert text["pattern"] == NOT_BLANK_PATTERN
    assert {"type": "number"} in trace["properties"]["reference_answer"]["anyOf"]
    assert any(b.get("type") == "array" for b in trace["properties"]["question"]["anyOf"])  # chat messages
    assert [branch["required"] for branch in trace["oneOf"]] == [["steps"], ["completion"]]
    steps = next(b for b in trace["properties"]["steps"]["anyOf"] if b.get("type") == "array")
    assert steps["minItems"] == 1 and steps["items"]["pattern"] == NOT_BLANK_PATTERN
    group_id = trace["properties"]["group_id"]["anyOf"]
    assert group_id == [{"type": "string"}, {"type": "integer"}, {"type": "null"}]  # hashed over the limit
    assert (
        "group_id" not in trace["required"]
        and str(MAX_GROUP_ID_CHARS) in trace["properties"]["group_id"]["description"]
    )
    request = _schema(open_document, "AnnotateRequest")
    assert [branch["required"] for branch in request["oneOf"]] == [["trace"], ["traces"]]
    # each entry of `traces` is checked on its own: a Trace, or any object answered as that trace's error
    items = next(b for b in request["properties"]["traces"]["anyOf"] if b.get("type") == "array")["items"]
    assert items["anyOf"][0]["$ref"].startswith("#/components/schemas/Trace")
    assert items["anyOf"][1]["type"] == "object"
    openrlhf = _schema(open_document, "OpenRLHFRewardRequest")["properties"]
    assert openrlhf["query"]["minItems"] == 1
    assert (
        openrlhf["prompts"]["items"]["pattern"] == openrlhf["labels"]["items"]["pattern"] == NOT_BLANK_PATTERN
    )
    annotate = _operations(open_document)["POST /v1/annotate"]
    assert {"400", "413", "415", "422", "429", "503", "504"} <= set(annotate["responses"])


def test_the_annotate_schemas_declare_token_offsets_and_token_rewards(open_document: dict[str, Any]) -> None:
    request = _schema(open_document, "AnnotateRequest")["properties"]["token_offsets"]
    per_trace = next(branch for branch in request["anyOf"] if branch.get("type") == "array")["items"]
    offsets = next(branch for branch in per_trace["anyOf"] if branch.get("type") == "array")
    pair = offsets["items"]
    assert (pair["type"], pair["minItems"], pair["maxItems"]) == ("array", 2, 2)
    assert pair["items"] == {"type": "integer", "minimum": 0}
    response = _schema(open_document, "AnnotateResponse")["properties"]["token_rewards"]
    assert "token_rewards" not in _schema(open_document, "AnnotateResponse").get("required", [])
    listed = next(branch for branch in response["anyOf"] if branch.get("type") == "array")
    assert {"$ref": "#/components/schemas/TokenRewards"} in listed["items"]["anyOf"]
    rewards = _schema(open_document, "TokenRewards")
    assert set(rewards["required"]) == {
        "rewards",
        "outcome_index",
        "step_end_tokens",
        "completion_mask",
        "cot_mask",
        "answer_mask",
    }
