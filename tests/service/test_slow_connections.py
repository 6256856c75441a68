"""Slow or silent clients hold no connection for ever: the service's uvicorn configuration closes a
connection whose request headers do not arrive within MIG_HEADER_TIMEOUT_S, and one idle between requests
after MIG_KEEP_ALIVE_S, while other clients are answered."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from mig_annotator.engine.probe.fake import FakeProbe
from mig_annotator.service.app import create_app
from mig_annotator.service.server import uvicorn_config
from mig_annotator.service.settings import ServiceSettings

SLOW_CLIENTS = 40


@contextmanager
def served(settings: ServiceSettings) -> Iterator[int]:
    server = uvicorn.Server(uvicorn_config(create_app(settings, probe=FakeProbe()), settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _closed_by_server(sock: socket.socket, wait_s: float) -> bool:
    """True when the server closes the connection (EOF or reset) within ``wait_s``."""
    sock.settimeout(wait_s)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_connections_that_never_finish_their_headers_are_closed() -> None:
    settings = ServiceSettings(
        host="127.0.0.1", port=0, audit_enabled=False, header_timeout_s=1.0, keep_alive_s=1.0
    )
    with served(settings) as port:
        slow = []
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /v1/annotate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")  # never finished
            slow.append(sock)
        silent = socket.create_connection(("127.0.0.1", port))  # sends nothing at all
        idle = socket.create_connection(("127.0.0.1", port))  # one request, then idle on keep-alive
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
        try:
            assert all(_closed_by_server(sock, 30) for sock in [*slow, silent, idle])
        finally:
            for sock in [*slow, silent, idle]:
                sock.close()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200


def test_the_service_bounds_concurrent_connections_and_header_sizes() -> None:
    settings = ServiceSettings(audit_enabled=False, max_connections=100)
    config = uvicorn_config(create_app(settings, probe=FakeProbe()), settings)
    assert config.limit_concurrency == 100
    assert config.timeout_keep_alive == settings.keep_alive_s
    assert config.h11_max_incomplete_event_size is not None
