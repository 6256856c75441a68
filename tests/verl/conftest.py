"""Fixtures of the verl tests (`make test-verl`): the live reward service and the policy's tokenizer."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.verl.support import ROOT, TOKENIZER_PATH


@pytest.fixture(scope="session")
def service_url() -> Iterator[str]:
    """The reward service over the fake probe, served by the main venv's Python (it has the engine)."""
    python = os.environ.get("MIG_SERVICE_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [python, "-m", "tests.client.fake_service"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    url = process.stdout.readline().strip()
    try:
        assert url.startswith("http://127.0.0.1:"), f"the service did not start: {url!r}"
        yield url
    finally:
        process.stdin.close()
        process.wait(timeout=60)


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    if not TOKENIZER_PATH.is_dir():
        pytest.skip(f"{TOKENIZER_PATH} is missing: run `make model`")
    return AutoTokenizer.from_pretrained(TOKENIZER_PATH)
