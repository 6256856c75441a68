"""The network wall every test runs behind: connections to this machine work, any other address is stopped
before a packet is sent and fails the test."""

from __future__ import annotations

import errno
import os
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import pytest

from tests.network_guard import NetworkGuard, OffMachineConnection, is_local

REPO = Path(__file__).resolve().parents[1]
OFF_MACHINE = ("10.255.255.1", 9)  # a private address nothing here answers; never reached


def test_a_tcp_connection_off_the_machine_is_stopped_before_any_packet(network_wall: NetworkGuard) -> None:
    with network_wall.expecting_refusals() as refused, socket.socket() as sock:
        with pytest.raises(OffMachineConnection, match=r"10\.255\.255\.1"):
            sock.connect(OFF_MACHINE)
        with pytest.raises(OSError) as not_connected:  # the real connect never ran
            sock.getpeername()
        assert not_connected.value.errno == errno.ENOTCONN
        with pytest.raises(OffMachineConnection):
            sock.connect_ex(OFF_MACHINE)
    assert refused == [f"connect {OFF_MACHINE!r}"] * 2


def test_http_clients_and_datagrams_off_the_machine_are_stopped(network_wall: NetworkGuard) -> None:
    with network_wall.expecting_refusals() as refused:
        with pytest.raises(httpx.ConnectError):  # httpx wraps the refusal; the record keeps it
            httpx.get("http://10.255.255.1:9/", timeout=5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(OffMachineConnection):
                udp.sendto(b"x", OFF_MACHINE)
            try:  # a datagram connect sends nothing (Ray and vLLM learn their own address so)
                udp.connect(OFF_MACHINE)
            except OSError as error:  # no route at all on this machine: nothing to send through
                assert not isinstance(error, OffMachineConnection)
            else:
                with pytest.raises(OffMachineConnection):
                    udp.send(b"x")
    assert [entry.split()[0] for entry in refused][:2] == ["connect", "sendto"]


def test_a_refusal_a_library_swallows_still_fails_the_test(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import network_wall, no_off_machine_connections  # noqa: F401\n"
    )
    (tmp_path / "test_leaving.py").write_text(
        "import contextlib, socket\n"
        "def test_quietly_leaves():\n"
        "    with contextlib.suppress(OSError), socket.socket() as sock:\n"
        "        sock.connect(('10.255.255.1', 9))\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(tmp_path),
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 1, done.stdout
    assert "1 passed, 1 error" in done.stdout
    assert "the test tried to leave the machine: connect ('10.255.255.1', 9)" in done.stdout


def test_this_machine_stays_reachable() -> None:
    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(self.request.recv(16))

    with socketserver.TCPServer(("127.0.0.1", 0), Echo) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with socket.create_connection(server.server_address, timeout=5) as sock:
                sock.sendall(b"ping")
                assert sock.recv(16) == b"ping"
        finally:
            server.shutdown()
    with tempfile.TemporaryDirectory() as folder, socket.socket(socket.AF_UNIX) as unix:
        path = str(Path(folder) / "s")
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(path)
            listener.listen()
            unix.connect(path)


@pytest.mark.parametrize(
    ("address", "family", "local"),
    [
        (("127.0.0.1", 80), socket.AF_INET, True),
        (("127.8.9.10", 80), socket.AF_INET, True),
        (("0.0.0.0", 80), socket.AF_INET, True),
        (("localhost", 80), socket.AF_INET, True),
        (("::1", 80, 0, 0), socket.AF_INET6, True),
        (("::ffff:127.0.0.1", 80, 0, 0), socket.AF_INET6, True),
        (("10.255.255.1", 80), socket.AF_INET, False),
        (("8.8.8.8", 53), socket.AF_INET, False),
        (("2001:4860:4860::8888", 53, 0, 0), socket.AF_INET6, False),
        (("::ffff:8.8.8.8", 53, 0, 0), socket.AF_INET6, False),
        (("example.com", 80), socket.AF_INET, False),
    ],
)
def test_what_counts_as_this_machine(address: tuple, family: int, local: bool) -> None:
    assert is_local(address, family) is local
