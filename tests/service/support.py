"""Service test helpers: a real uvicorn server on 127.0.0.1, and traces."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from mig_annotator.engine.segment.user_regex import MAX_REGEX_WORK, StepPattern
from mig_annotator.schemas import Trace


@contextmanager
def live_server(app: FastAPI, *, wait_ready: bool = True) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        if wait_ready:
            wait_until_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def wait_until_ready(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} was not ready within {timeout_s}s")
        time.sleep(0.05)


def small_traces(count: int, prefix: str = "t") -> list[Trace]:
    """Short GSM8K-style traces with different numbers (fast to score), some right and some wrong."""
    traces = []
    for index in range(count):
        a, b = 3 + index % 7, 2 + index % 5
        total = a + b
        claimed = total if index % 3 else total + 1
        traces.append(
            Trace(
                id=f"{prefix}{index}",
                question=f"Sam has {a} apples and buys {b} more. How many apples does he have?",
                completion=(
                    f"Sam starts with {a} apples.\nHe buys {b}, so {a} + {b} = {claimed}.\nA: {claimed}"
                ),
                reference_answer=str(total),
            )
        )
    return traces


def trace_json(trace: Trace) -> dict[str, object]:
    return trace.model_dump(mode="json", exclude_none=True)


SLOW_STEP_PATTERN = "(.*a){1000}"
"""Overflows RE2's DFA, so its search runs on the slow engine on every machine."""


def slow_planning_request(traces: int = 12) -> dict[str, object]:
    """A request whose planning takes many seconds on any machine: ``traces`` completions of "a", each just
    under the step search's work limit with :data:`SLOW_STEP_PATTERN` (about 2 s each on an idle core here;
    one request is planned on one thread, trace after trace, so 12 take about 24 s), about 45 KB each."""
    size = MAX_REGEX_WORK // StepPattern(SLOW_STEP_PATTERN).program_size - 1000
    completion = "a" * size
    return {
        "traces": [
            {"id": f"slow{index}", "question": "q?", "completion": completion, "reference_answer": "1"}
            for index in range(traces)
        ],
        "config": {"segmenter": "regex", "step_regex": SLOW_STEP_PATTERN},
    }
