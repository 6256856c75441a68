"""A big per-token payload does not run on the event loop: the body's JSON parsing and validation, the
offset checks, the reward placement and the answer's serialisation happen in worker threads, so the loop
stays free for other clients (``/healthz``) while half a million token offsets are handled."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from mig_annotator.engine.probe.fake import FakeProbe
from mig_annotator.schemas.api import AnnotateRequest, AnnotateResponse, TokenRewards
from mig_annotator.service import token_rewards
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server

TOKENS = 200_000


def _recording(calls: list[str], name: str, work: Callable[..., Any]) -> Callable[..., Any]:
    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(f"{name}@{threading.current_thread().name}")
        return work(*args, **kwargs)

    return recorded


def test_per_token_work_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        token_rewards, "offsets_problem", _recording(calls, "check", token_rewards.offsets_problem)
    )
    monkeypatch.setattr(TokenRewards, "of", _recording(calls, "place", TokenRewards.of))
    validate = AnnotateRequest.model_validate.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(AnnotateRequest, "model_validate", classmethod(_recording(calls, "parse", validate)))
    dump = AnnotateResponse.model_dump_json
    monkeypatch.setattr(AnnotateResponse, "model_dump_json", _recording(calls, "serialise", dump))
    body = {
        "traces": [
            {"id": "big", "question": "q?", "completion": "ab " * 300 + "A: 1", "reference_answer": "1"}
        ],
        "token_offsets": [[[0, 0]] * TOKENS],
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    settings = ServiceSettings(audit_enabled=False)
    with live_server(create_app(settings, probe=FakeProbe())) as url:
        answer = httpx.post(
            f"{url}/v1/annotate", content=raw, headers={"content-type": "application/json"}, timeout=120
        )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["token_rewards"][0]["rewards"]) == TOKENS
    done = {call.split("@")[0] for call in calls}
    assert {"parse", "check", "place", "serialise"} <= done
    on_loop = [call for call in calls if call.endswith("@test-uvicorn")]  # the server's event-loop thread
    assert on_loop == []
