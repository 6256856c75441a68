"""SIGTERM with heavy requests in flight: open requests get the grace period, then the JSON error body (503,
``ShuttingDown``), not a plain-text 500, and their planning work is abandoned, so the process exits soon
after the grace period instead of waiting for that work."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from mig_annotator.cli.serve_process import ServeProcess
from tests.service.support import slow_planning_request

REPO = Path(__file__).resolve().parents[2]
GRACE_S = 2
IN_FLIGHT = 2


def test_sigterm_answers_in_flight_requests_with_the_json_error_and_exits(tmp_path: Path) -> None:
    env = {
        "PYTHONPATH": str(REPO),
        "MIG_PROBE__BACKEND": "fake",
        "MIG_SHUTDOWN_GRACE_S": str(GRACE_S),
        "MIG_REQUEST_TIMEOUT_S": "120",
        "MIG_AUDIT_ENABLED": "false",
        "MIG_LOG_LEVEL": "warning",
    }
    answers: list[httpx.Response] = []
    with ServeProcess(args=[], env=env, cwd=tmp_path, ready_timeout_s=120, stop_grace_s=5) as server:
        assert server.process is not None
        body = slow_planning_request()
        senders = [
            threading.Thread(
                target=lambda: answers.append(httpx.post(f"{server.url}/v1/annotate", json=body, timeout=120))
            )
            for _ in range(IN_FLIGHT)
        ]
        for sender in senders:
            sender.start()
        time.sleep(1.0)  # both requests are being planned
        server.process.send_signal(signal.SIGTERM)
        for sender in senders:
            sender.join(timeout=120)
        exit_code = server.process.wait(timeout=60)
    assert exit_code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it drained on
    assert len(answers) == IN_FLIGHT
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        assert "shutting down" in answer.json()["message"]
