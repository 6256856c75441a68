"""``ServeProcess``: a ``mig-annotator serve`` that dies before it is ready is reported, not waited for."""

from __future__ import annotations

import time

import pytest

from mig_annotator.cli.serve_process import ServeProcess, free_port


def test_a_serve_that_exits_before_ready_raises_with_its_exit_code_at_once() -> None:
    server = ServeProcess(args=["--no-such-option"], ready_timeout_s=120)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"exited with code 2 before it was ready"):
        server.__enter__()
    assert time.monotonic() - started < 60  # it did not wait out the 120 s ready timeout
    assert server.process is not None and server.process.returncode == 2


def test_free_port_is_a_bindable_localhost_port() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536
