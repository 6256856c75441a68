"""One structured log line per API request (logger ``mig.service.requests``, at INFO): a JSON object with
the request id, method, path, status, seconds, and for scoring requests the traces, the planned and the
forwarded probe tokens. The annotation service adds to the request's :class:`RequestTally` as it works."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("mig.service.requests")
LOGGED_PREFIX = "/v1/"


@dataclass(slots=True)
class RequestTally:
    """What one request cost: traces sent, probe tokens planned (admission's estimate), and forwarded."""

    traces: int = 0
    planned_tokens: int = 0
    forwarded_tokens: int = 0


class RequestLogMiddleware:
    """Puts a :class:`RequestTally` in the request's state and logs one line when the answer is sent (also
    when the request fails or the client leaves: status 499 when nothing was answered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(LOGGED_PREFIX):
            await self.app(scope, receive, send)
            return
        tally = RequestTally()
        state = scope.setdefault("state", {})
        state["tally"] = tally
        started = time.perf_counter()
        status = 499

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        except Exception:
            status = 500
            raise
        finally:
            if logger.isEnabledFor(logging.INFO):
                line = {
                    "event": "request",
                    "request_id": state.get("request_id"),
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "seconds": round(time.perf_counter() - started, 4),
                    "traces": tally.traces,
                    "planned_tokens": tally.planned_tokens,
                    "forwarded_tokens": tally.forwarded_tokens,
                }
                logger.info(json.dumps(line, separators=(",", ":")))
