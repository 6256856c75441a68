"""Client test helpers: a deterministic fake probe behind a real service (the client never sees a model)."""

from __future__ import annotations

from typing import Any


def fake_probe() -> Any:
    """The package's fake probe when it ships one (``mig/probe/fake.py``), else the builder tests' fake."""
    try:
        from mig_annotator.mig.probe.fake import FakeProbe  # type: ignore[import-not-found]
    except ImportError:
        from tests.builder.conftest import FakeProbe
    return FakeProbe()
