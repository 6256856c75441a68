"""A real HTTP server on 127.0.0.1 in front of a live service: it answers scripted faults, then forwards.

Unlike ``httpx.MockTransport`` the client goes through real sockets, timeouts and connection handling.
``script`` holds what to do with each coming ``/v1/annotate`` request, in order: an ``(status, headers)``
error answer, ``("hang", seconds)`` (sleep, then forward), or ``("late", indices)`` (forward, then mark those
traces of the answer ``deadline_exceeded`` as a service past its deadline would). Every annotate request's
arrival time and trace count is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class Script:
    def __init__(self, upstream: str, steps: list[tuple[Any, Any]] | None = None) -> None:
        self.upstream = upstream
        self.steps = list(steps or [])
        self.lock = threading.Lock()
        self.arrivals: list[float] = []
        self.sizes: list[int] = []

    def next_step(self, size: int) -> tuple[Any, Any] | None:
        with self.lock:
            self.arrivals.append(time.monotonic())
            self.sizes.append(size)
            return self.steps.pop(0) if self.steps else None


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _forward(self, body: bytes | None) -> httpx.Response:
            return httpx.request(
                self.command,
                f"{script.upstream}{self.path}",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=60,
            )

        def do_GET(self) -> None:
            answer = self._forward(None)
            self._answer(answer.status_code, answer.content)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            step = None
            if self.path == "/v1/annotate":
                step = script.next_step(len(json.loads(body)["traces"]))
            if step is not None and isinstance(step[0], int):
                error = {"error": "overloaded", "message": "scripted", "fields": [], "request_id": "s"}
                self._answer(step[0], json.dumps(error).encode(), step[1])
                return
            if step is not None and step[0] == "hang":
                time.sleep(step[1])
            answer = self._forward(body)
            content = answer.content
            if step is not None and step[0] == "late":
                data = answer.json()
                for index in step[1]:
                    data["annotations"][index] = None
                    data["errors"].append(
                        {
                            "index": index,
                            "field": f"traces[{index}]",
                            "message": "late",
                            "code": "deadline_exceeded",
                        }
                    )
                data["errors"].sort(key=lambda e: e["index"])
                content = json.dumps(data).encode()
            self._answer(answer.status_code, content)

    return Handler


@contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="scripted-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
