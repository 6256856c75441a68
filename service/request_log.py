"""One structured log line per API request (logger ``mig.service.requests``, at INFO): a JSON object with
the request id, method, path, status, seconds, and for scoring requests the traces, the planned and the
forwarded probe tokens. The metrics middleware starts and logs the tally; the annotation service adds to
it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from starlette.types import Scope

logger = logging.getLogger("mig.service.requests")
LOGGED_PREFIX = "/v1/"


@dataclass(slots=True)
class RequestTally:
    """What one request cost: traces sent, probe tokens planned (admission's estimate), and forwarded."""

    traces: int = 0
    planned_tokens: int = 0
    forwarded_tokens: int = 0


def start_tally(scope: Scope) -> RequestTally | None:
    """A fresh tally in the request's state, for a logged (``/v1/``) request; else None."""
    if not scope["path"].startswith(LOGGED_PREFIX):
        return None
    tally = RequestTally()
    scope.setdefault("state", {})["tally"] = tally
    return tally


def log_request(scope: Scope, status: int, seconds: float, tally: RequestTally) -> None:
    """The request's one log line (status 499: nothing was answered, the client left)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    line = {
        "event": "request",
        "request_id": scope.get("state", {}).get("request_id"),
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "seconds": round(seconds, 4),
        "traces": tally.traces,
        "planned_tokens": tally.planned_tokens,
        "forwarded_tokens": tally.forwarded_tokens,
    }
    logger.info(json.dumps(line, separators=(",", ":")))
