"""The default model: converted from the shipped GGUF atomically, once, and checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mig_annotator.engine.model_store import (
    DEFAULT_MODEL_NAME,
    MARKER_FILE,
    ModelStoreError,
    find_default_gguf,
    prepare_default_model,
    resolve_model_path,
)


def test_the_gguf_is_found_inside_the_installed_package_without_importing_it() -> None:
    path = find_default_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_conversion_replaces_an_unfinished_folder_and_is_checked_atomic_idempotent_and_quiet(
    tmp_path: Path, default_model_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """One conversion (about 30 s) serves every check."""
    target = tmp_path / DEFAULT_MODEL_NAME
    target.mkdir()
    (target / "config.json").write_text("{}")  # a crash left this; no marker
    first = prepare_default_model(tmp_path)
    assert first.converted and first.max_logit_diff == 0.0
    printed = capfd.readouterr()
    for bar in ("Loading weights", "Converting and de-quantizing GGUF tensors", "it/s]"):
        assert bar not in printed.err + printed.out
    assert first.path == target
    assert (target / "model.safetensors").read_bytes() == (
        default_model_path / "model.safetensors"
    ).read_bytes()
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER_FILE} <= {
        p.name for p in target.iterdir()
    }
    marker = json.loads((target / MARKER_FILE).read_text())
    assert len(marker["source_sha256"]) == 64 and marker["max_logit_diff"] == 0.0
    assert [p.name for p in tmp_path.iterdir()] == [DEFAULT_MODEL_NAME]  # no staging folder left behind
    second = prepare_default_model(tmp_path)
    assert not second.converted and second.path == target


def test_cache_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mig_annotator.engine.model_store import default_cache_dir

    monkeypatch.setenv("MIG_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path


def test_a_model_argument_must_be_a_local_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="not a local Hugging Face model folder"):
        resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ModelStoreError, match=r"no config\.json"):
        resolve_model_path(tmp_path)


def test_a_prepared_folder_is_used_as_is(default_model_path: Path) -> None:
    assert resolve_model_path(default_model_path) == default_model_path
