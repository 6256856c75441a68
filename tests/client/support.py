"""Client test helpers: the package's deterministic fake probe behind a real service (no model)."""

from __future__ import annotations

from mig_annotator.mig.probe.fake import FakeProbe


def fake_probe() -> FakeProbe:
    """The package's fake probe (:mod:`mig.probe.fake`)."""
    return FakeProbe()
