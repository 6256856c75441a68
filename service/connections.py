"""Connection bounds uvicorn lacks: a connection must send a request's headers within a time limit.

uvicorn closes a connection idle *between* requests (``timeout_keep_alive``) and answers 503 over
``limit_concurrency``, but a client that opens a connection and sends its headers a byte at a time (or
never) holds it for ever. :func:`header_timeout_protocol` gives uvicorn an h11 protocol that closes a
connection whose request has not begun (headers complete) within ``header_timeout_s`` of its opening or of
its previous response.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class _HeaderTimeoutH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        started = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._close_if_no_request, started)

    def _close_if_no_request(self, cycle_then: Any) -> None:
        """Close when no new request began since the timer was armed (its headers never completed)."""
        self._header_timer = None
        if self.cycle is cycle_then and not self.transport.is_closing():
            self.transport.close()


def header_timeout_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` with this header time limit."""
    return type(
        "HeaderTimeoutH11Protocol", (_HeaderTimeoutH11Protocol,), {"header_timeout_s": header_timeout_s}
    )
