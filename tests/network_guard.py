"""The test run's network wall: a test may open connections to this machine only.

Installed for the whole pytest process (``tests/conftest.py``), it wraps ``socket.socket.connect``,
``connect_ex`` and ``sendto``: a stream connection, or a datagram sent, to an address outside 127.0.0.0/8,
``::1`` (and its IPv4-mapped form) and the unspecified addresses (which Linux routes to this machine) raises
:class:`OffMachineConnection` *before* the real call, so no packet leaves, and is recorded, so the test that
made it fails even where a library swallows the error. Unix sockets are always allowed. A datagram
``connect`` sends nothing (Ray and vLLM use one to learn their own address), so it is allowed; what such a
socket then ``send``s goes through the same check.

Child processes (servers a test starts, ``mig-annotator`` subprocesses) are not guarded: they are bound to
127.0.0.1 by the tests that start them. Code that talks through C sockets (gRPC inside Ray) is not seen.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class OffMachineConnection(ConnectionRefusedError):
    """A test tried to reach an address off this machine; nothing was sent."""


def is_local(address: Any, family: int) -> bool:
    """Whether ``address`` (a socket address of ``family``) is this machine."""
    if family == getattr(socket, "AF_UNIX", None):
        return True
    if family not in (socket.AF_INET, socket.AF_INET6):
        return False
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).split("%", 1)[0]  # an IPv6 zone
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name: resolving it could leave the machine
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


class NetworkGuard:
    """Wraps the socket methods and records every refused address."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self._originals: dict[str, Any] = {}

    def _refuse(self, sock: socket.socket, address: Any, what: str) -> None:
        if not is_local(address, sock.family):
            self.refused.append(f"{what} {address!r}")
            raise OffMachineConnection(
                f"tests may reach 127.0.0.1 only: {what} to {address!r} was stopped before any packet"
            )

    def install(self) -> None:
        if self._originals:
            return
        guard = self
        connect, connect_ex, sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
        send = socket.socket.send
        self._originals = {"connect": connect, "connect_ex": connect_ex, "sendto": sendto, "send": send}

        def guarded_connect(self: socket.socket, address: Any) -> None:
            if self.type != socket.SOCK_DGRAM:
                guard._refuse(self, address, "connect")
            return connect(self, address)

        def guarded_connect_ex(self: socket.socket, address: Any) -> int:
            if self.type != socket.SOCK_DGRAM:
                guard._refuse(self, address, "connect")
            return connect_ex(self, address)

        def guarded_sendto(self: socket.socket, data: Any, *args: Any) -> int:
            guard._refuse(self, args[-1], "sendto")
            return sendto(self, data, *args)

        def guarded_send(self: socket.socket, data: Any, *args: Any) -> int:
            if self.type == socket.SOCK_DGRAM:
                peer = None
                with contextlib.suppress(OSError):  # not connected: the real send raises
                    peer = self.getpeername()
                if peer is not None:
                    guard._refuse(self, peer, "send")
            return send(self, data, *args)

        socket.socket.connect = guarded_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
        socket.socket.sendto = guarded_sendto  # type: ignore[method-assign]
        socket.socket.send = guarded_send  # type: ignore[method-assign]

    def uninstall(self) -> None:
        for name, method in self._originals.items():
            setattr(socket.socket, name, method)
        self._originals = {}

    @contextlib.contextmanager
    def expecting_refusals(self) -> Iterator[list[str]]:
        """For the guard's own tests: the refusals made inside, taken off the record."""
        before = len(self.refused)
        caught: list[str] = []
        try:
            yield caught
        finally:
            caught += self.refused[before:]
            del self.refused[before:]


GUARD = NetworkGuard()
