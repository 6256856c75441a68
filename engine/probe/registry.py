"""Backend name -> the class that implements it, imported only when a probe of that backend is opened.

The one place that maps settings to a backend. Importing this module imports no backend (torch, vLLM and
httpx stay unloaded until ``open_probe``).
"""

from __future__ import annotations

import importlib
from typing import Any

from mig_annotator.engine.probe.base import Probe
from mig_annotator.engine.probe.settings import ProbeSettings, parse_probe_settings
from mig_annotator.schemas.probe import ProbeIdentity

BACKENDS: dict[str, str] = {
    "transformers": "mig_annotator.engine.probe.transformers_probe:TransformersProbe",
    "vllm-server": "mig_annotator.engine.probe.vllm_server:VLLMServerProbe",
    "vllm": "mig_annotator.engine.probe.vllm_inprocess:VLLMProbe",
    "fake": "mig_annotator.engine.probe.fake:FakeProbe",
}


def probe_class(backend: str) -> type[Probe]:
    """The class implementing ``backend`` (imports its module)."""
    try:
        module_name, class_name = BACKENDS[backend].split(":")
    except KeyError:
        raise ValueError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}") from None
    probe_type = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(probe_type, Probe), f"{BACKENDS[backend]} is not a Probe"
    return probe_type


def open_probe(settings: ProbeSettings | dict[str, Any]) -> Probe:
    """Load the probe the settings name (slow for model backends: loads weights or contacts the server)."""
    resolved = parse_probe_settings(settings) if isinstance(settings, dict) else settings
    return probe_class(resolved.backend)(resolved)  # type: ignore[call-arg]


def expected_identity(settings: ProbeSettings) -> ProbeIdentity | None:
    """The identity the probe will have, computed without loading it (hashing the model folder), or None
    when only the opened probe can tell (``vllm-server``: the served model comes from the server)."""
    from mig_annotator.engine.model_store import resolve_model_path

    if settings.backend in ("transformers", "vllm"):
        from mig_annotator.engine.probe.identity import local_model_identity

        return local_model_identity(resolve_model_path(settings.model), settings.backend, settings.dtype)
    if settings.backend == "fake":
        from mig_annotator.engine.probe.fake import fake_identity

        return fake_identity(settings)
    return None
