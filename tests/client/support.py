"""Client test helpers: the package's deterministic fake probe behind a real service (no model), and a
recording proxy that shows what a client really sent."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from mig_annotator.client import MigClient

if TYPE_CHECKING:  # the verl venv imports this module for the proxy and has no engine
    from mig_annotator.engine.probe.fake import FakeProbe


def fake_probe() -> FakeProbe:
    """The package's fake probe (:mod:`engine.probe.fake`)."""
    from mig_annotator.engine.probe.fake import FakeProbe

    return FakeProbe()


class RecordingProxy:
    """An ``httpx.MockTransport`` handler that forwards every request to ``upstream`` unchanged and keeps
    the traces of each ``/v1/annotate`` body, as sent, in ``sent``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/annotate":
            self.sent.extend(json.loads(request.content)["traces"])
        answer = httpx.request(
            request.method,
            f"{self.upstream}{request.url.path}",
            content=request.content,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        return httpx.Response(answer.status_code, content=answer.content)

    def client(self) -> MigClient:
        """A sync client whose requests go through this proxy."""
        return MigClient("http://mig.test", http_client=httpx.Client(transport=httpx.MockTransport(self)))
