"""A live service over the deterministic fake probe (no model): for tests of the HTTP surface only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.client.support import fake_probe
from tests.service.support import live_server

TIMEOUT_S = 120.0
"""Client timeout of these tests: on a loaded machine the first request waits for the answer-check workers."""


@contextmanager
def fake_service(audit_dir: Path | None = None, **settings: Any) -> Iterator[str]:
    """A live service on 127.0.0.1 over a fresh fake probe; audit into ``audit_dir`` when given."""
    service_settings = ServiceSettings(
        audit_enabled=audit_dir is not None, audit_dir=audit_dir or Path("unused-audit"), **settings
    )
    with live_server(create_app(service_settings, probe=fake_probe())) as url:
        yield url
