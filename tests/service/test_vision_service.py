"""The reward service on questions with images: a real HTTP server on 127.0.0.1 with a tiny
vision-language probe of each tested family (Idefics3-, Qwen2-VL-shaped); images come as base64 data in the
request body and score as the naive probe in process does (to 1e-4, fp32); an image path in a request is
refused naming its part, the others scored."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mig_annotator.engine.probe import TransformersProbeSettings
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server
from tests.vision_support import as_request_traces, image_question


def test_the_service_scores_images_in_the_request_body_like_the_naive_probe(
    tmp_path: Path, vlm_family: tuple[Path, dict[str, list[float]]], vision_rows: Path
) -> None:
    import torch

    folder, vision_reference = vlm_family

    traces = as_request_traces(vision_rows)
    scene = str(vision_rows.parent / "scenes" / "scene0.png")
    path_trace = {**traces[0], "id": "by-path", "question": image_question("How many?", scene)}
    settings = ServiceSettings(
        probe=TransformersProbeSettings(model=str(folder), threads=1), audit_dir=tmp_path / "audit"
    )
    threads_before = torch.get_num_threads()
    try:
        with live_server(create_app(settings)) as url:
            response = httpx.post(f"{url}/v1/annotate", json={"traces": [*traces, path_trace]}, timeout=300)
    finally:
        torch.set_num_threads(threads_before)
    assert response.status_code == 200, response.text
    body = response.json()
    [error] = body["errors"]
    assert error["index"] == len(traces) and error["code"] == "invalid_trace"
    assert error["message"] == (
        "question[0].content[0].image: image paths are not read here: give the data (base64 or a data: URL)"
    )
    annotations = {a["trace_id"]: a for a in body["annotations"] if a is not None}
    assert set(annotations) == set(vision_reference)
    for trace_id, expected in vision_reference.items():
        values = [annotations[trace_id]["v0"], *(step["v"] for step in annotations[trace_id]["steps"])]
        assert values == pytest.approx(expected, abs=1e-4, rel=0), trace_id
