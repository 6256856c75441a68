"""Per-token rewards in the service's answer: a request's `token_offsets` give back each trace's rewards and
masks, equal to what a trainer computes itself with `align_annotation` (client.verl.token_rewards); bad
offsets are that trace's error naming the field. A live service (real uvicorn on 127.0.0.1, real probe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from transformers import AutoTokenizer

from mig_annotator.client import MigClient, TokenRewards
from mig_annotator.client.verl import token_rewards
from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.token_alignment import align_annotation, token_offsets
from tests.service.support import small_traces, trace_json

POLICY_TOKENIZER = Path(__file__).resolve().parents[2] / "bench" / "assets" / "smollm2-tokenizer"


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(POLICY_TOKENIZER, local_files_only=True)


def response_ids(tokenizer: Any, text: str) -> list[int]:
    """The policy's sampled ids for ``text``, ending in EOS (a zero-width token) as a rollout does."""
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def offsets_of(tokenizer: Any, trace: Trace) -> list[list[int]]:
    assert trace.completion is not None
    ids = response_ids(tokenizer, trace.completion)
    return token_offsets(tokenizer, ids, trace.completion).tolist()


def test_the_services_per_token_rewards_equal_align_annotation_on_the_client(
    service_url: str, tokenizer: Any
) -> None:
    traces = small_traces(3, prefix="tok-")
    offsets = [offsets_of(tokenizer, traces[0]), None, offsets_of(tokenizer, traces[2])]
    with MigClient(service_url) as client:
        answered = client.annotate_token_rewards(traces, offsets)
    assert answered[1][1] is None and isinstance(answered[1][0], TraceAnnotation)
    for (annotation, placed), trace, given in zip(answered, traces, offsets, strict=True):
        if given is None:
            continue
        assert isinstance(annotation, TraceAnnotation) and isinstance(placed, TokenRewards)
        assert trace.completion is not None
        ids = response_ids(tokenizer, trace.completion)
        expected = token_rewards(tokenizer, ids, annotation)  # what verl's reward manager computes
        assert len(placed.rewards) == len(ids) == len(expected)
        np.testing.assert_array_equal(np.asarray(placed.rewards, dtype=np.float32), expected)
        alignment = align_annotation(annotation, given)
        np.testing.assert_array_equal(placed.rewards, alignment.rewards(annotation.outcome))
        assert placed.completion_mask == alignment.completion_mask.tolist()
        assert placed.cot_mask == alignment.cot_mask.tolist()
        assert placed.answer_mask == alignment.answer_mask.tolist()
        assert placed.outcome_index == alignment.outcome_index
        assert placed.step_end_tokens == alignment.step_end_tokens.tolist()
        assert placed.completion_mask[-1] is False and placed.rewards[-1] == 0.0  # EOS covers no text
        total = annotation.process_reward + annotation.outcome
        assert sum(placed.rewards) == pytest.approx(total, abs=1e-9)


def test_without_offsets_the_answer_has_no_token_rewards(service_url: str) -> None:
    body = {"traces": [trace_json(small_traces(1)[0])]}
    answer = httpx.post(f"{service_url}/v1/annotate", json=body, timeout=120).json()
    assert answer["token_rewards"] is None


def test_bad_offsets_are_that_traces_error_naming_the_token(service_url: str, tokenizer: Any) -> None:
    traces = small_traces(3, prefix="bad-")
    good = offsets_of(tokenizer, traces[1])
    past_end = [[0, 3], [3, 400]]
    going_back = [[0, 3], [3, 9], [2, 9]]
    body = {
        "traces": [trace_json(trace) for trace in traces],
        "token_offsets": [past_end, good, going_back],
    }
    response = httpx.post(f"{service_url}/v1/annotate", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["annotations"][0] is None and answer["annotations"][2] is None
    assert answer["annotations"][1]["trace_id"] == "bad-1"
    assert [(e["index"], e["field"], e["code"]) for e in answer["errors"]] == [
        (0, "token_offsets[0][1]", "invalid_trace"),
        (2, "token_offsets[2][2]", "invalid_trace"),
    ]
    length = len(traces[0].completion or "")
    assert (
        answer["errors"][0]["message"] == f"token 1: [3, 400] ends past the completion's {length} characters"
    )
    assert "goes back from the previous token's [3, 9]" in answer["errors"][1]["message"]
    assert answer["token_rewards"][0] is None and answer["token_rewards"][2] is None
    assert len(answer["token_rewards"][1]["rewards"]) == len(good)

    strict = httpx.post(f"{service_url}/v1/annotate", json=body | {"strict": True}, timeout=120)
    assert strict.status_code == 422
    assert [f["field"] for f in strict.json()["fields"]] == ["token_offsets[0][1]", "token_offsets[2][2]"]


def test_offsets_of_a_steps_trace_are_checked_against_its_joined_steps(service_url: str) -> None:
    steps = Trace(id="steps", question="What is 2 + 3?", steps=["2 + 3 = 5.", "A: 5"], reference_answer="5")
    body = {"trace": trace_json(steps), "token_offsets": [[[0, 5], [5, 40]]]}
    refused = httpx.post(f"{service_url}/v1/annotate", json=body, timeout=120)
    assert refused.status_code == 422
    assert [f["field"] for f in refused.json()["fields"]] == ["token_offsets[0][1]"]
    body["token_offsets"] = [[[0, 5], [5, 10], [10, 15]]]
    answer = httpx.post(f"{service_url}/v1/annotate", json=body, timeout=120).json()
    placed = answer["token_rewards"][0]
    assert answer["annotations"][0]["completion"] == "2 + 3 = 5.\nA: 5"
    assert len(placed["rewards"]) == 3 and placed["answer_mask"][-1] is True


def test_offsets_must_come_one_per_trace_as_pairs_of_integers(service_url: str) -> None:
    traces = [trace_json(trace) for trace in small_traces(2)]
    too_few = httpx.post(
        f"{service_url}/v1/annotate", json={"traces": traces, "token_offsets": [[[0, 1]]]}, timeout=60
    )
    assert too_few.status_code == 422
    assert "token_offsets has 1 entries for 2 traces" in too_few.json()["message"]
    for offsets, where in (
        ([[[0, 1, 2]], None], "token_offsets[0][0]"),
        ([[["0", 1]], None], "token_offsets[0][0][0]"),
        ([[[-1, 1]], None], "token_offsets[0][0][0]"),
    ):
        response = httpx.post(
            f"{service_url}/v1/annotate", json={"traces": traces, "token_offsets": offsets}, timeout=60
        )
        assert response.status_code == 422, offsets
        assert any(f["field"].startswith(where) for f in response.json()["fields"]), response.json()


def test_a_trace_with_bad_fields_among_traces_with_offsets_is_its_own_error_and_the_others_are_placed(
    service_url: str, tokenizer: Any
) -> None:
    traces = small_traces(3, prefix="mix-")
    body = {
        "traces": [trace_json(t) for t in traces],
        "token_offsets": [offsets_of(tokenizer, t) for t in traces],
    }
    body["traces"][1]["reference_answer"] = ""  # a field error of trace 1 only
    answer = httpx.post(f"{service_url}/v1/annotate", json=body, timeout=120).json()
    assert answer["annotations"][1] is None and answer["token_rewards"][1] is None
    assert [error["field"] for error in answer["errors"]] == ["traces[1].reference_answer"]
    body["token_offsets"][2][0] = [5, 2]  # and a bad offset of trace 2: named with its request index
    answer = httpx.post(f"{service_url}/v1/annotate", json=body, timeout=120).json()
    assert sorted(error["field"] for error in answer["errors"]) == [
        "token_offsets[2][0]",
        "traces[1].reference_answer",
    ]
    placed = answer["token_rewards"][0]
    assert placed is not None and len(placed["rewards"]) == len(body["token_offsets"][0])
    assert answer["token_rewards"][2] is None
