"""Schemathesis over the live service's OpenAPI document: generated requests, valid and not, never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from mig_annotator.mig.probe.base import Probe
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server

pytestmark = pytest.mark.model

EXAMPLES_PER_OPERATION_AND_MODE = 25


@pytest.fixture(scope="module")
def fuzz_url(probe: Probe) -> Iterator[str]:
    limits = ServiceSettings(
        max_body_bytes=50_000,
        max_traces_per_request=3,
        max_steps_per_trace=16,
        max_tokens_per_trace=256,
        audit_enabled=False,
    )
    with live_server(create_app(limits, probe=probe)) as url:
        yield url


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_generated_request_gets_a_server_error(fuzz_url: str, mode: GenerationMode) -> None:
    # (schemathesis' own pytest loader does not run under pytest 9, so the operations are driven here)
    schema = schemathesis.openapi.from_url(f"{fuzz_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/annotate", "/v1/openrlhf/reward", "/readyz", "/metrics"}
    if mode == GenerationMode.NEGATIVE:  # endpoints without inputs have nothing to make invalid
        operations = [op for op in operations if op.method.upper() == "POST"]
    calls: dict[str, list[int]] = {}
    for operation in operations:
        _fuzz(operation, mode, fuzz_url, calls.setdefault(f"{operation.method.upper()} {operation.path}", []))
    assert all(statuses for statuses in calls.values())
    assert not [s for statuses in calls.values() for s in statuses if s >= 500]
    if mode == GenerationMode.POSITIVE:
        assert set(calls["GET /healthz"]) == {200}


def _fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, url: str, statuses: list[int]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        response = case.call_and_validate(base_url=url, checks=[not_a_server_error], timeout=120)
        statuses.append(response.status_code)

    check()
