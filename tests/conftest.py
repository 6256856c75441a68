"""Shared fixtures: the real default probe model, loaded once per session."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.network_guard import GUARD, NetworkGuard

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_ROLLOUTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k_rollouts.jsonl"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def network_wall() -> Iterator[NetworkGuard]:
    """Every test runs behind the network wall (tests/network_guard.py): only this machine is reachable."""
    GUARD.install()
    yield GUARD
    GUARD.uninstall()


@pytest.fixture(autouse=True)
def no_off_machine_connections(network_wall: NetworkGuard) -> Iterator[None]:
    """A test that tried to reach another machine fails, even where a library swallowed the refusal."""
    before = len(network_wall.refused)
    yield
    refused = network_wall.refused[before:]
    if refused:
        pytest.fail(f"the test tried to leave the machine: {'; '.join(refused)}")


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    from mig_annotator.engine.model_store import resolve_model_path

    return resolve_model_path(None)


@pytest.fixture(scope="session")
def packed_probe(default_model_path: Path):
    from mig_annotator.engine.probe.settings import TransformersProbeSettings
    from mig_annotator.engine.probe.transformers_probe import TransformersProbe

    return TransformersProbe(TransformersProbeSettings(model=str(default_model_path), mode="packed"))


@pytest.fixture(scope="session")
def naive_probe(default_model_path: Path):
    from mig_annotator.engine.probe.settings import TransformersProbeSettings
    from mig_annotator.engine.probe.transformers_probe import TransformersProbe

    return TransformersProbe(TransformersProbeSettings(model=str(default_model_path), mode="naive"))


@pytest.fixture(scope="session")
def shared_rollouts() -> list[dict]:
    """The shared GSM8K rollouts; tests that use them skip when ../shared/data is absent."""
    if not SHARED_ROLLOUTS.is_file():
        pytest.skip(f"shared data not present at {SHARED_ROLLOUTS}")
    with SHARED_ROLLOUTS.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


# ------------------------------------------------------------------------------------------------------------
# long contexts (tests/long_context.py): a tiny random-initialised 32k-context model and a 16k-token trace
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised 2-layer Llama with a 32,768-token context and SmolLM2's tokenizer (a folder)."""
    from tests.long_context import tiny_long_context_model

    return tiny_long_context_model(tmp_path_factory.mktemp("tiny-long-llama"))


@pytest.fixture(scope="session")
def long_think(tiny_long_model: Path):
    """The synthetic 16k-token `<think>` prose trace (a :class:`tests.long_context.LongThinkTrace`)."""
    from transformers import AutoTokenizer

    from tests.long_context import long_think_trace

    return long_think_trace(AutoTokenizer.from_pretrained(tiny_long_model), 16_000, seed=0)


@pytest.fixture(scope="session")
def long_think_reference(tiny_long_model: Path, long_think):
    """The engine's annotation of the 16k trace with the tiny model on one torch thread, as the CLI, the
    service and the builder are run in the long-trace tests (the callers must reproduce it)."""
    import torch

    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe import TransformersProbeSettings, open_probe
    from mig_annotator.schemas import Trace

    threads_before = torch.get_num_threads()
    try:
        probe = open_probe(TransformersProbeSettings(model=str(tiny_long_model), threads=1))
        with Annotator(probe) as annotator:
            (annotation,) = annotator.annotate([Trace(**long_think.row())])
    finally:
        torch.set_num_threads(threads_before)
    return annotation


# ------------------------------------------------------------------------------------------------------------
# questions with images (tests/vision_support.py): a tiny random-initialised vision-language model and rows
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_vlm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised Idefics3 (SmolVLM-shaped) model folder with its processor."""
    from tests.vision_support import tiny_vlm

    return tiny_vlm(tmp_path_factory.mktemp("tiny-idefics3"), "idefics3")


@pytest.fixture(scope="session")
def tiny_qwen2_vl_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised Qwen2-VL-shaped model folder (M-RoPE) with its tokenizer and image processor."""
    from tests.vision_support import tiny_vlm

    return tiny_vlm(tmp_path_factory.mktemp("tiny-qwen2-vl"), "qwen2_vl")


@pytest.fixture(scope="session")
def vision_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rollouts.jsonl (image paths relative to it, a base64 image part, a text-only row) beside its scenes."""
    from tests.vision_support import write_vision_rows

    return write_vision_rows(tmp_path_factory.mktemp("vision-rows"))


def _naive_vision_reference(folder: Path, rows: Path) -> dict[str, list[float]]:
    """``rows``' v_0..v_K by the naive probe on ``folder`` in process (torch's thread count restored)."""
    import torch

    from tests.vision_support import naive_reference

    threads_before = torch.get_num_threads()
    try:
        return naive_reference(folder, rows)
    finally:
        torch.set_num_threads(threads_before)


@pytest.fixture(scope="session")
def vision_reference(tiny_vlm_folder: Path, vision_rows: Path) -> dict[str, list[float]]:
    """The rows' v_0..v_K by the naive probe in process."""
    return _naive_vision_reference(tiny_vlm_folder, vision_rows)


@pytest.fixture(scope="session")
def qwen2_vl_vision_reference(tiny_qwen2_vl_folder: Path, vision_rows: Path) -> dict[str, list[float]]:
    """The rows' v_0..v_K by the naive probe in process, with the Qwen2-VL-shaped model."""
    return _naive_vision_reference(tiny_qwen2_vl_folder, vision_rows)


# the tested vision-language families: each one's model folder fixture and its rows' naive reference
VISION_FAMILY_FIXTURES = {
    "idefics3": ("tiny_vlm_folder", "vision_reference"),
    "qwen2_vl": ("tiny_qwen2_vl_folder", "qwen2_vl_vision_reference"),  # M-RoPE positions
}


@pytest.fixture(scope="session", params=sorted(VISION_FAMILY_FIXTURES))
def vlm_family(request: pytest.FixtureRequest) -> tuple[Path, dict[str, list[float]]]:
    """Per tested family (Idefics3/SmolVLM-shaped, Qwen2-VL-shaped): its tiny model folder and the
    ``vision_rows``' v_0..v_K by the naive probe on it."""
    folder_fixture, reference_fixture = VISION_FAMILY_FIXTURES[request.param]
    return request.getfixturevalue(folder_fixture), request.getfixturevalue(reference_fixture)
