"""What a trainer watches: /metrics shows the outcome rate, mean process reward, zero-reward share and SFT
gate rate of the annotations served, per probe version; the service logs one structured line per request
(request id, traces, planned and forwarded probe tokens, seconds, status)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from mig_annotator.engine.probe.fake import FakeProbe
from mig_annotator.schemas import TraceAnnotation
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server, small_traces, trace_json


def _gauge(text: str, name: str) -> float:
    prefix = f'{name}{{probe_version="1"}} '
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


def test_metrics_show_the_rewards_served_per_probe_version(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mig.service.requests")
    traces = [trace_json(trace) for trace in small_traces(12)]
    with live_server(create_app(ServiceSettings(audit_enabled=False), probe=FakeProbe())) as url:
        response = httpx.post(
            f"{url}/v1/annotate", json={"traces": traces}, headers={"X-Request-ID": "step-7"}, timeout=60
        )
        assert response.status_code == 200, response.text
        refused = httpx.post(f"{url}/v1/annotate", json={"traces": []}, timeout=60)
        assert refused.status_code == 422
        metrics = httpx.get(f"{url}/metrics").text
    served = [TraceAnnotation.model_validate(item) for item in response.json()["annotations"]]
    count = len(served)
    outcomes = sum(item.outcome for item in served)
    assert 0 < outcomes < count  # small_traces holds right and wrong answers
    assert _gauge(metrics, "mig_outcome_rate") == pytest.approx(outcomes / count)
    mean_reward = sum(item.process_reward for item in served) / count
    assert _gauge(metrics, "mig_mean_process_reward") == pytest.approx(mean_reward)
    zero = sum(item.process_reward == 0 for item in served) / count
    assert _gauge(metrics, "mig_zero_reward_share") == pytest.approx(zero)
    assert _gauge(metrics, "mig_gate_rate") == pytest.approx(sum(item.sft_gate for item in served) / count)
    assert _gauge(metrics, "mig_reward_traces_total") == count
    assert _gauge(metrics, "mig_correct_outcomes_total") == outcomes

    lines = [
        json.loads(record.getMessage()) for record in caplog.records if record.name == "mig.service.requests"
    ]
    by_id = {line["request_id"]: line for line in lines if line["path"] == "/v1/annotate"}
    scored = by_id["step-7"]
    assert scored["status"] == 200 and scored["traces"] == 12
    assert scored["forwarded_tokens"] == sum(item.tokens_forwarded for item in served)
    assert scored["planned_tokens"] >= scored["forwarded_tokens"] > 0  # the fake forwards what was planned
    assert scored["seconds"] > 0
    (failed,) = [line for line in by_id.values() if line["status"] == 422]
    assert failed["forwarded_tokens"] == 0
