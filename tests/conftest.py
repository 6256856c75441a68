"""Shared fixtures: the real default probe model, loaded once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_ROLLOUTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k_rollouts.jsonl"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    from mig_annotator.mig.model_store import resolve_model_path

    return resolve_model_path(None)


@pytest.fixture(scope="session")
def packed_probe(default_model_path: Path):
    from mig_annotator.mig.probe.transformers_probe import TransformersProbe, TransformersProbeSettings

    return TransformersProbe(TransformersProbeSettings(model=str(default_model_path), mode="packed"))


@pytest.fixture(scope="session")
def naive_probe(default_model_path: Path):
    from mig_annotator.mig.probe.transformers_probe import TransformersProbe, TransformersProbeSettings

    return TransformersProbe(TransformersProbeSettings(model=str(default_model_path), mode="naive"))


@pytest.fixture(scope="session")
def shared_rollouts() -> list[dict]:
    """The shared GSM8K rollouts; tests that use them skip when ../shared/data is absent."""
    if not SHARED_ROLLOUTS.is_file():
        pytest.skip(f"shared data not present at {SHARED_ROLLOUTS}")
    with SHARED_ROLLOUTS.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]
