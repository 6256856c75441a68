"""The probe backends: one entry each, and everything that names a backend built from the entries.

An entry holds a backend's settings class (whose ``backend`` field's default is the backend's name), the
probe class that implements it and the function that computes its identity without loading it, both as
``module:name`` paths imported on use (as lm-evaluation-harness registers its models lazily). From the
entries come the backend names (:data:`ProbeBackend`), the settings union (:data:`ProbeSettings`, told apart
by ``backend``), the settings classes by name (:data:`SETTINGS_CLASSES`), :func:`open_probe` and
:func:`expected_identity`. Importing this module imports no backend (torch, vLLM and httpx stay unloaded
until ``open_probe``).

Adding a backend: its settings class in :mod:`engine.probe.settings`, its :class:`Probe` subclass in a module
of its own, and one entry below.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Discriminator, Tag, TypeAdapter

from mig_annotator.engine.probe.base import Probe
from mig_annotator.engine.probe.settings import (
    FakeProbeSettings,
    TransformersProbeSettings,
    VLLMProbeSettings,
    VLLMServerProbeSettings,
)
from mig_annotator.schemas.probe import ProbeIdentity

_PROBE = "mig_annotator.engine.probe"


@dataclasses.dataclass(frozen=True, slots=True)
class Backend:
    """One probe backend: its settings, the probe class it opens and its identity rule."""

    settings: type[BaseModel]
    probe: str  # "module:Class", the Probe subclass, imported when a probe of this backend is opened
    identity: str | None  # "module:function" (settings -> ProbeIdentity without loading the probe); None:
    # only the opened probe can tell (its model comes from a server)

    @property
    def name(self) -> str:
        """The backend's name: its settings' ``backend`` value."""
        return str(self.settings.model_fields["backend"].default)

    @property
    def summary(self) -> str:
        """What the backend is, in one line: its settings class's first docstring line."""
        return (self.settings.__doc__ or "").strip().splitlines()[0].rstrip(".")


_LOCAL_IDENTITY = f"{_PROBE}.identity:expected_local_identity"
BACKENDS: dict[str, Backend] = {
    entry.name: entry
    for entry in (
        Backend(TransformersProbeSettings, f"{_PROBE}.transformers_probe:TransformersProbe", _LOCAL_IDENTITY),
        Backend(VLLMServerProbeSettings, f"{_PROBE}.vllm_server:VLLMServerProbe", None),
        Backend(VLLMProbeSettings, f"{_PROBE}.vllm_inprocess:VLLMProbe", _LOCAL_IDENTITY),
        Backend(FakeProbeSettings, f"{_PROBE}.fake:FakeProbe", f"{_PROBE}.fake:fake_identity"),
    )
}
"""Every backend by name; the first is the default (a settings mapping without ``backend``)."""

DEFAULT_BACKEND: str = next(iter(BACKENDS))
ProbeBackend = Literal[tuple(BACKENDS)]  # type: ignore[valid-type]
"""The backend names, as a type (the CLI's choices)."""
SETTINGS_CLASSES: dict[str, type[BaseModel]] = {name: entry.settings for name, entry in BACKENDS.items()}
BACKEND_DESCRIPTION = "What runs the probe. " + "; ".join(
    f"{name}: {entry.summary[0].lower()}{entry.summary[1:]}" for name, entry in BACKENDS.items()
)
"""The description of the ``backend`` setting: each backend's name and summary."""


def _backend_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("backend", DEFAULT_BACKEND))
    return str(getattr(value, "backend", DEFAULT_BACKEND))


ProbeSettings = Annotated[
    Union[tuple(Annotated[entry.settings, Tag(name)] for name, entry in BACKENDS.items())],  # type: ignore[valid-type]  # noqa: UP007
    Discriminator(_backend_of),
]
"""Any backend's settings; ``backend`` picks the class (missing: the default backend)."""

PROBE_SETTINGS_ADAPTER: TypeAdapter[Any] = TypeAdapter(ProbeSettings)


def parse_probe_settings(data: Any) -> Any:
    """Validate a plain mapping (or settings object) into the backend's settings class."""
    return PROBE_SETTINGS_ADAPTER.validate_python(data)


def _load(path: str) -> Any:
    module_name, name = path.split(":")
    return getattr(importlib.import_module(module_name), name)


def probe_class(backend: str) -> type[Probe]:
    """The class implementing ``backend`` (imports its module)."""
    try:
        entry = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}") from None
    probe_type = _load(entry.probe)
    assert issubclass(probe_type, Probe), f"{entry.probe} is not a Probe"
    return probe_type


def open_probe(settings: Any) -> Probe:
    """Load the probe the settings (an object or a mapping) name (slow for model backends: loads weights or
    contacts the server)."""
    resolved = parse_probe_settings(settings) if isinstance(settings, dict) else settings
    return probe_class(resolved.backend)(resolved)  # type: ignore[call-arg]


def expected_identity(settings: Any) -> ProbeIdentity | None:
    """The identity the probe will have, computed without loading it (hashing the model folder), or None
    when only the opened probe can tell (its backend's entry has no identity rule)."""
    rule = BACKENDS[settings.backend].identity
    return None if rule is None else _load(rule)(settings)
