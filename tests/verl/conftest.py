"""Fixtures of the verl tests (`make test-verl`): the live reward service and the policy's tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.verl.support import TOKENIZER_PATH, main_python, piped_service


@pytest.fixture(scope="session")
def service_url() -> Iterator[str]:
    """The reward service over the fake probe, served by the main venv's Python (it has the engine)."""
    with piped_service([main_python(), "-m", "tests.client.fake_service"]) as url:
        yield url


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    if not TOKENIZER_PATH.is_dir():
        pytest.skip(f"{TOKENIZER_PATH} is missing: run `make model`")
    return AutoTokenizer.from_pretrained(TOKENIZER_PATH)
