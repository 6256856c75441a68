"""Probe backends behind one interface (:class:`engine.probe.base.Probe`), opened by :func:`open_probe`.

Light to import: the backends (torch, vLLM, httpx) load only when a probe of theirs is opened.
"""

from mig_annotator.engine.probe.base import (
    ContextLimitError,
    Probe,
    ProbeCancelled,
    ProbeError,
    ProbeResult,
    ProbeStats,
)
from mig_annotator.engine.probe.registry import (
    ProbeSettings,
    expected_identity,
    open_probe,
    parse_probe_settings,
)
from mig_annotator.engine.probe.settings import (
    FakeProbeSettings,
    TransformersProbeSettings,
    VLLMProbeSettings,
    VLLMServerProbeSettings,
)

__all__ = [
    "ContextLimitError",
    "FakeProbeSettings",
    "Probe",
    "ProbeCancelled",
    "ProbeError",
    "ProbeResult",
    "ProbeSettings",
    "ProbeStats",
    "TransformersProbeSettings",
    "VLLMProbeSettings",
    "VLLMServerProbeSettings",
    "expected_identity",
    "open_probe",
    "parse_probe_settings",
]
