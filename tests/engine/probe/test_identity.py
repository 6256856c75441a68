"""Probe identity: a content digest of weights and tokenizer that tells checkpoints apart, hashed once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mig_annotator.engine.probe import TransformersProbeSettings, expected_identity
from mig_annotator.engine.probe import identity as identity_module
from mig_annotator.engine.probe.identity import CACHE_FILE, folder_digest, local_model_identity
from mig_annotator.engine.probe.transformers_probe import TransformersProbe

TOKENIZER = Path(__file__).resolve().parents[3] / "bench" / "assets" / "smollm2-tokenizer"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with empty digest caches (in memory and on disk)."""
    monkeypatch.setenv("MIG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(identity_module, "_memory", {})


def _tiny_checkpoint(folder: Path, *, bump_one_tensor: bool = False) -> Path:
    """A one-layer Llama with SmolLM2's tokenizer; ``bump_one_tensor`` changes one weight of the same
    architecture (same shapes, same config)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    model = LlamaForCausalLM(config)
    if bump_one_tensor:
        with torch.no_grad():
            model.model.norm.weight[0] += 0.5
    model.save_pretrained(folder)
    for path in TOKENIZER.iterdir():
        shutil.copy(path, folder / path.name)
    return folder


def test_two_checkpoints_of_one_architecture_with_different_weights_differ(tmp_path: Path) -> None:
    first = _tiny_checkpoint(tmp_path / "a" / "tiny")
    second = _tiny_checkpoint(tmp_path / "b" / "tiny", bump_one_tensor=True)
    assert (first / "config.json").read_bytes() == (second / "config.json").read_bytes()
    a = local_model_identity(first, "transformers", "float32")
    b = local_model_identity(second, "transformers", "float32")
    assert (
        (a.model, a.backend, a.dtype) == (b.model, b.backend, b.dtype) == ("tiny", "transformers", "float32")
    )
    assert a.digest != b.digest and a.fingerprint != b.fingerprint
    assert folder_digest(first, tokenizer_only=True) == folder_digest(second, tokenizer_only=True)
    assert len(a.digest) == 64 and a.fingerprint == f"transformers:tiny:float32:{a.digest[:16]}"


def test_the_same_files_elsewhere_keep_their_digest_and_docs_do_not_count(tmp_path: Path) -> None:
    original = _tiny_checkpoint(tmp_path / "a" / "tiny")
    moved = tmp_path / "elsewhere" / "tiny"
    shutil.copytree(original, moved)
    (moved / "README.md").write_text("notes")
    (moved / "mig-converted.json").write_text('{"torch": "other"}')
    assert folder_digest(moved) == folder_digest(original)
    (moved / "tokenizer_config.json").write_text((moved / "tokenizer_config.json").read_text() + " ")
    assert folder_digest(moved) != folder_digest(original)  # the tokenizer counts


def test_a_file_is_hashed_once_then_read_from_the_cache_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _tiny_checkpoint(tmp_path / "tiny")
    hashed: list[str] = []
    real_sha256 = identity_module.file_sha256

    def counting_sha256(path: Path) -> str:
        hashed.append(path.name)
        return real_sha256(path)

    monkeypatch.setattr(identity_module, "file_sha256", counting_sha256)
    first = folder_digest(folder)
    files = len(hashed)
    assert "model.safetensors" in hashed
    assert (tmp_path / "cache" / CACHE_FILE).is_file()
    monkeypatch.setattr(identity_module, "_memory", {})  # a new process: only the cache file is left
    assert folder_digest(folder) == first and len(hashed) == files
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    assert folder_digest(folder) != first
    assert hashed[files:] == ["config.json"]


def test_the_transformers_probe_reports_the_identity_computed_without_loading(tmp_path: Path) -> None:
    folder = _tiny_checkpoint(tmp_path / "tiny")
    settings = TransformersProbeSettings(model=str(folder), threads=1)
    probe = TransformersProbe(settings)
    assert probe.identity() == expected_identity(settings)
    assert probe.identity().model == probe.model_id == "tiny"
    bf16 = expected_identity(TransformersProbeSettings(model=str(folder), dtype="bfloat16"))
    assert bf16 is not None
    assert bf16.digest == probe.identity().digest and bf16.fingerprint != probe.identity().fingerprint
    assert probe.health() is None
    probe.close()
