"""Settings that cannot work together are refused at start-up, naming the environment variables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mig_annotator.service.settings import ServiceSettings


def test_the_queue_must_hold_the_largest_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIG_QUEUE_MAX_TRACES", "8")
    monkeypatch.setenv("MIG_MAX_TRACES_PER_REQUEST", "16")
    with pytest.raises(
        ValidationError,
        match=r"MIG_QUEUE_MAX_TRACES \(8\) must be at least MIG_MAX_TRACES_PER_REQUEST \(16\)",
    ):
        ServiceSettings()
    monkeypatch.setenv("MIG_QUEUE_MAX_TRACES", "16")
    assert ServiceSettings().queue_max_traces == 16
    description = ServiceSettings.model_fields["queue_max_traces"].description or ""
    assert "at least MIG_MAX_TRACES_PER_REQUEST" in description
