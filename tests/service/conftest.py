"""Fixtures: the real SmolLM2 probe (loaded once per session) and a default live service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.probe.base import Probe
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server


@pytest.fixture(scope="session", autouse=True)
def _service_environment_cleared() -> Iterator[None]:
    """Service settings come from MIG_* variables: the tests set theirs explicitly, whatever the shell has."""
    with pytest.MonkeyPatch.context() as patch:
        for name in os.environ:
            if name.startswith("MIG_") and name != "MIG_CACHE_DIR":
                patch.delenv(name)
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def probe() -> Iterator[Probe]:
    """SmolLM2 on one torch thread: on a shared 2-core machine, two threads contending with the server's
    event loop (and other processes) make every forward pass several times slower and erratic."""
    import torch

    from mig_annotator.engine.probe import TransformersProbeSettings, open_probe

    threads_before = torch.get_num_threads()
    yield open_probe(TransformersProbeSettings(threads=1))
    torch.set_num_threads(threads_before)


@pytest.fixture(scope="session")
def engine(probe: Probe) -> Annotator:
    """The in-process engine over the same probe: what the service must reproduce exactly."""
    return Annotator(probe)


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit")


@pytest.fixture(scope="module")
def service_url(probe: Probe, audit_dir: Path) -> Iterator[str]:
    """A service with default settings (audit into a temporary folder) on 127.0.0.1."""
    settings = ServiceSettings(audit_dir=audit_dir)
    with live_server(create_app(settings, probe=probe)) as url:
        yield url
