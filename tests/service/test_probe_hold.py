"""One request must never hold the probe: a real ``mig-annotator serve`` (SmolLM2) on 127.0.0.1, attacked with
a windowed trace whose every late step is a full-context (8,192-token) pass, minutes of probe work on a CPU.

* By default the request's planned probe work is over the per-request budget (what the deadline can cover):
  413 naming the limit before any probe work; a trivial request right after is answered 200 within seconds.
* With the budget lifted, the request gets 504 at its deadline and its probe work is abandoned between
  forward passes, so the next trivial request is answered within seconds too.
* SIGTERM while such work runs: the server exits within its grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mig_annotator.cli.serve_process import ServeProcess
from tests.service.support import small_traces, trace_json

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 6
GRACE_S = 3


def _attack() -> dict[str, object]:
    """``<think>`` + ~60,000 characters of prose without newlines + the answer, scored with windows."""
    sentence = "We carefully reconsider every earlier quantity and recompute the running total once again. "
    prose = sentence * 660
    return {
        "trace": {
            "id": "attack",
            "question": "What is 2 + 3?",
            "completion": f"<think>{prose}</think>\nThe answer is \\boxed{{5}}.",
            "reference_answer": "5",
        },
        "config": {"context_limit": "window", "max_steps": None},
    }


@contextmanager
def _serve(tmp_path: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``mig-annotator serve --threads 1`` in a subprocess; stopped at the end whatever happened."""
    settings = {
        "PYTHONPATH": str(REPO),
        "MIG_REQUEST_TIMEOUT_S": str(TIMEOUT_S),
        "MIG_SHUTDOWN_GRACE_S": str(GRACE_S),
        "MIG_AUDIT_DIR": str(tmp_path / "audit"),
        "MIG_LOG_LEVEL": "warning",
    }
    server = ServeProcess(
        args=["--threads", "1"], env={**settings, **env}, cwd=tmp_path, ready_timeout_s=180, stop_grace_s=5
    )
    with server:
        assert server.process is not None
        yield server.url, server.process


def _trivial_answered_quickly(url: str) -> float:
    trivial = {"trace": trace_json(small_traces(1)[0])}
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/annotate", json=trivial, timeout=TIMEOUT_S + 5)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    return elapsed


def _terminates_within_grace(process: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=GRACE_S + 15)  # raises TimeoutExpired (the test fails) when it hangs
    return time.monotonic() - started


@pytest.mark.model
def test_a_windowed_request_over_the_probe_budget_is_refused_before_any_probe_work(tmp_path: Path) -> None:
    with _serve(tmp_path) as (url, process):
        started = time.monotonic()
        response = httpx.post(f"{url}/v1/annotate", json=_attack(), timeout=TIMEOUT_S + 30)
        assert response.status_code == 413, response.text
        assert time.monotonic() - started < TIMEOUT_S
        error = response.json()
        assert error["error"] == "payload_too_large"
        assert "MIG_MAX_REQUEST_PROBE_TOKENS" in error["message"]
        assert error["fields"][0]["field"] == "trace.completion"
        assert "windowed steps" in error["fields"][0]["message"]
        assert _trivial_answered_quickly(url) < TIMEOUT_S
        assert _terminates_within_grace(process) < GRACE_S + 10


@pytest.mark.model
def test_a_timed_out_windowed_request_is_abandoned_and_sigterm_stops_running_work(tmp_path: Path) -> None:
    # work is abandoned between forward passes: 512 new positions per pass keeps one pass about a second
    limits = {"MIG_MAX_REQUEST_PROBE_TOKENS": str(10**9), "MIG_PROBE__CHUNK_TOKENS": "512"}
    with _serve(tmp_path, **limits) as (url, process):
        started = time.monotonic()
        response = httpx.post(f"{url}/v1/annotate", json=_attack(), timeout=TIMEOUT_S + 30)
        assert response.status_code == 504, response.text
        assert time.monotonic() - started < TIMEOUT_S + 5
        # the abandoned work stops at its next forward pass: a trivial request is not held behind it
        assert _trivial_answered_quickly(url) < TIMEOUT_S
        # a client that gives up: its queued work is dropped too, so the probe is free again
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/annotate", json=_attack(), timeout=1.5)
        assert _trivial_answered_quickly(url) < TIMEOUT_S
        # SIGTERM while the probe works on a long request: drained and gone within the grace period
        sender = subprocess.Popen(
            [sys.executable, "-c", _POST_ATTACK, f"{url}/v1/annotate"],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
        )
        try:
            time.sleep(2.0)
            assert _terminates_within_grace(process) < GRACE_S + 10
        finally:
            sender.kill()
            sender.wait(timeout=10)


_POST_ATTACK = f"""
import sys, httpx
from tests.service.test_probe_hold import _attack
try:
    httpx.post(sys.argv[1], json=_attack(), timeout={TIMEOUT_S + 30})
except httpx.HTTPError:
    pass
"""
