"""The reward service with a 32k-context probe (from its probe settings): a 16k-token `<think>` prose trace
is within its default limits and scored like the engine scores it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mig_annotator.engine.probe import TransformersProbeSettings
from mig_annotator.engine.segment import segment_completion
from mig_annotator.schemas import Trace
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server, trace_json


def test_the_service_limits_follow_the_probe_context_and_a_16k_trace_is_scored(
    tmp_path: Path, tiny_long_model: Path, long_think, long_think_reference
) -> None:
    import torch

    settings = ServiceSettings(
        probe=TransformersProbeSettings(model=str(tiny_long_model), threads=1), audit_dir=tmp_path / "audit"
    )
    assert settings.max_tokens_per_trace is None and settings.max_steps_per_trace is None  # the defaults
    threads_before = torch.get_num_threads()
    try:
        with live_server(create_app(settings)) as url:  # the service opens the probe its settings name
            info = httpx.get(f"{url}/v1/info").json()
            trace = Trace(id="long-think", **{k: v for k, v in long_think.row().items() if k != "id"})
            response = httpx.post(f"{url}/v1/annotate", json={"trace": trace_json(trace)}, timeout=300)
    finally:
        torch.set_num_threads(threads_before)
    assert info["probe"]["context_limit"] == 32_768
    assert info["limits"]["max_tokens_per_trace"] == 32_768  # not a fixed 4,096: the probe's context
    assert info["limits"]["max_steps_per_trace"] is None
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errors"] == []
    [annotation] = body["annotations"]
    segmented = segment_completion(long_think.completion)
    assert len(annotation["steps"]) == annotation["steps_total"] == len(segmented.steps) >= 100
    assert [(s["span"]["start"], s["span"]["end"]) for s in annotation["steps"]] == [
        (s.start, s.end) for s in segmented.steps
    ]
    assert annotation["windowed_steps"] == 0 and annotation["truncated"] is False
    assert annotation["answer"] == str(long_think.answer) and annotation["outcome"] == 1
    values = [annotation["v0"], *(step["v"] for step in annotation["steps"])]
    expected = [long_think_reference.v0, *(step.v for step in long_think_reference.steps)]
    assert values == pytest.approx(expected, abs=1e-6, rel=0)
