"""A live service over a deterministic fake probe (no model): for tests of the HTTP surface only.

The probe is the builder tests' character-level fake until ``mig_annotator.mig.probe.fake`` exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server

try:  # the probe helper's shared fake, once merged
    from mig_annotator.mig.probe.fake import FakeProbe  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - until then
    from tests.builder.conftest import FakeProbe  # type: ignore[assignment,unused-ignore]


@contextmanager
def fake_service(audit_dir: Path | None = None, **settings: Any) -> Iterator[str]:
    """A live service on 127.0.0.1 over a fresh fake probe; audit into ``audit_dir`` when given."""
    service_settings = ServiceSettings(
        audit_enabled=audit_dir is not None, audit_dir=audit_dir or Path("unused-audit"), **settings
    )
    with live_server(create_app(service_settings, probe=FakeProbe())) as url:
        yield url
