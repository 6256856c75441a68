"""Fixtures: live services over the fake probe, and a client of the default one."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mig_annotator.client import MigClient
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.client.support import fake_probe
from tests.service.support import live_server


@pytest.fixture(scope="module", autouse=True)
def _service_environment_cleared() -> Iterator[None]:
    """Service settings come from MIG_* variables: set explicitly here, whatever the shell has."""
    with pytest.MonkeyPatch.context() as patch:
        for name in os.environ:
            if name.startswith("MIG_") and name != "MIG_CACHE_DIR":
                patch.delenv(name)
        yield


@pytest.fixture(scope="module")
def service_url(_service_environment_cleared: None) -> Iterator[str]:
    with live_server(create_app(ServiceSettings(audit_enabled=False), probe=fake_probe())) as url:
        yield url


@pytest.fixture(scope="module")
def two_per_request_url(_service_environment_cleared: None) -> Iterator[str]:
    settings = ServiceSettings(max_traces_per_request=2, audit_enabled=False)
    with live_server(create_app(settings, probe=fake_probe())) as url:
        yield url


@pytest.fixture(scope="module")
def client(service_url: str) -> Iterator[MigClient]:
    with MigClient(service_url) as client:
        yield client
