"""Every endpoint of a live service (real uvicorn, real SmolLM2 probe) answers what the engine computes."""

from __future__ import annotations

import httpx
import pytest

from mig_annotator.engine.annotator import Annotator
from mig_annotator.schemas import ScoringConfig, Trace, TraceAnnotation
from tests.service.support import small_traces, trace_json

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def client(service_url: str) -> httpx.Client:
    with httpx.Client(base_url=service_url, timeout=120) as client:
        yield client


def test_healthz_says_the_process_is_up(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_the_probe_and_audit_log_ready(client: httpx.Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "probe": "ready", "audit": "ok", "detail": None}


def test_info_names_the_probe_its_identity_defaults_and_limits(
    client: httpx.Client, engine: Annotator
) -> None:
    info = client.get("/v1/info").json()
    assert info["probe"]["model"] == engine.probe.model_id == "SmolLM2-135M-Instruct"
    assert info["probe"]["backend"] == "transformers"
    identity = engine.probe.identity()
    assert info["probe"]["fingerprint"] == identity.fingerprint
    assert info["probe"]["fingerprint"].startswith("transformers:SmolLM2-135M-Instruct:float32:")
    assert info["probe"]["digest"] == identity.digest and len(identity.digest) == 64
    assert info["probe"]["dtype"] == "float32"
    assert info["probe"]["context_limit"] == engine.probe.context_limit
    assert ScoringConfig.model_validate(info["scoring_defaults"]) == ScoringConfig()
    assert info["limits"]["max_traces_per_request"] == 64
    assert info["exact_batching"] is True
    assert info["auth_required"] is False and info["audit_enabled"] is True


def test_annotate_one_trace_equals_the_in_process_engine(client: httpx.Client, engine: Annotator) -> None:
    trace = small_traces(2)[1]
    response = client.post("/v1/annotate", json={"trace": trace_json(trace)})
    assert response.status_code == 200
    (served,) = [TraceAnnotation.model_validate(a) for a in response.json()["annotations"]]
    (expected,) = engine.annotate([trace])
    assert served == expected.model_copy(update={"probe_version": 1})  # the service's first probe
    assert served.outcome == 1 and served.steps and served.probe_model == "SmolLM2-135M-Instruct"
    assert served.probe_identity == engine.probe.identity().fingerprint


def test_annotate_a_group_answers_in_input_order_with_request_options(
    client: httpx.Client, engine: Annotator
) -> None:
    traces = small_traces(4, prefix="group-")
    body = {"traces": [trace_json(t) for t in traces], "config": {"watermark": "gain", "aggregation": "sum"}}
    response = client.post("/v1/annotate", json=body, headers={"X-Request-ID": "trainer-step-7"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "trainer-step-7"
    payload = response.json()
    assert payload["request_id"] == "trainer-step-7"
    served = [TraceAnnotation.model_validate(a) for a in payload["annotations"]]
    assert [a.trace_id for a in served] == ["group-0", "group-1", "group-2", "group-3"]
    config = ScoringConfig(watermark="gain", aggregation="sum")
    assert served == [engine.annotate([t], config)[0].model_copy(update={"probe_version": 1}) for t in traces]
    assert {a.config_hash for a in served} == {config.config_hash()} != {ScoringConfig().config_hash()}


def test_annotate_explicit_steps(client: httpx.Client, engine: Annotator) -> None:
    trace = Trace(
        id="steps",
        question="What is 6 times 7?",
        steps=["6 * 7 = 42.", "The answer is 42."],
        reference_answer="42",
    )
    response = client.post("/v1/annotate", json={"trace": trace_json(trace)})
    assert response.status_code == 200
    served = TraceAnnotation.model_validate(response.json()["annotations"][0])
    assert served == engine.annotate([trace])[0].model_copy(update={"probe_version": 1})


def test_openrlhf_reward_splits_queries_and_returns_the_mixed_scalar(
    client: httpx.Client, engine: Annotator
) -> None:
    traces = small_traces(3, prefix="rl-")
    prompts = [f"<|im_start|>user\n{t.question}<|im_end|>\n<|im_start|>assistant\n" for t in traces]
    queries = [p + t.completion + "<|im_end|>" for p, t in zip(prompts, traces, strict=True)]
    labels = [t.reference_answer for t in traces]
    response = client.post(
        "/v1/openrlhf/reward", json={"query": queries, "prompts": prompts, "labels": labels}
    )
    assert response.status_code == 200
    body = response.json()
    expected = [  # one engine call per trace: the service scores each trace in its own forward pass
        engine.annotate(
            [Trace(id="x", question=p, completion=t.completion, reference_answer=t.reference_answer)]
        )[0]
        for p, t in zip(prompts, traces, strict=True)
    ]
    assert body["rewards"] == [a.outcome + 1.0 * a.process_reward for a in expected]
    assert body["scores"] == [float(a.outcome) for a in expected] == [0.0, 1.0, 1.0]
    assert body["extra_logs"]["process_reward"] == [a.process_reward for a in expected]
    assert body["extra_logs"]["steps"] == [2.0, 2.0, 2.0]


def test_openrlhf_gives_the_query_that_does_not_hold_its_prompt_the_fallback(client: httpx.Client) -> None:
    body = {"query": ["Q: 1+1? A: 2", "other text"], "prompts": ["Q: 1+1?", "Q: 2+2?"], "labels": ["2", "4"]}
    response = client.post("/v1/openrlhf/reward", json=body)
    assert response.status_code == 200
    assert response.json()["rewards"][1] == 0.0  # MIG_OPENRLHF_FALLBACK_REWARD's default
    assert response.json()["extra_logs"]["failed"] == [0.0, 1.0]


def test_openrlhf_rejects_lists_of_different_lengths(client: httpx.Client) -> None:
    response = client.post(
        "/v1/openrlhf/reward", json={"query": ["a"], "prompts": ["a", "b"], "labels": ["1"]}
    )
    assert response.status_code == 422
    assert "equal lengths" in response.json()["message"]


def test_metrics_count_requests_batches_tokens_and_probe_time(client: httpx.Client) -> None:
    client.post("/v1/annotate", json={"traces": [trace_json(t) for t in small_traces(2, prefix="m")]})
    client.post("/v1/annotate", content=b"{", headers={"Content-Type": "application/json"})
    text = client.get("/metrics").text
    samples = _samples(text)
    assert samples['mig_requests_total{endpoint="/v1/annotate",status="200"}'] >= 1
    assert samples['mig_requests_total{endpoint="/v1/annotate",status="400"}'] == 1
    assert samples['mig_request_seconds_count{endpoint="/v1/annotate",status="200"}'] >= 1
    assert samples["mig_batch_traces_count"] >= 1
    assert samples["mig_tokens_forwarded_total"] > 0
    assert samples["mig_probe_seconds_count"] >= 1
    assert samples["mig_queue_depth"] == 0
    assert samples["mig_traces_annotated_total"] >= 2
    assert "mig_audit_write_errors_total 0.0" in text


def test_openapi_documents_every_endpoint_with_models(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    assert set(document["paths"]) >= {
        "/v1/annotate",
        "/v1/openrlhf/reward",
        "/v1/info",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    schemas = document["components"]["schemas"]
    assert {
        "AnnotateRequest",
        "AnnotateResponse",
        "TraceAnnotation",
        "ErrorResponse",
        "ScoringOptions",
    } <= set(schemas)
    assert schemas["AnnotateRequest"]["additionalProperties"] is False
    responses = document["paths"]["/v1/annotate"]["post"]["responses"]
    assert {"200", "413", "415", "422", "429", "503", "504"} <= set(responses)
    assert "401" not in responses  # no keys configured: the schema declares no auth


def test_unknown_paths_are_404_and_counted_as_other(client: httpx.Client) -> None:
    assert client.get("/v2/nothing").status_code == 404
    assert _samples(client.get("/metrics").text)['mig_requests_total{endpoint="other",status="404"}'] >= 1


def _samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples
