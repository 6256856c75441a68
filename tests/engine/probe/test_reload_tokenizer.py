"""A reload checks the tokenizer by what decides the token ids, not by its files' bytes.

A trainer's ``save_pretrained`` rewrites the tokenizer files (padding side, length limit, formatting): the
same vocabulary, special tokens and chat template must still reload. A different vocabulary or chat
template is refused, naming which.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mig_annotator.engine.probe.reload import ReloadRefused, stage_reload
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from tests.long_context import tiny_long_context_model


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> tuple[TransformersProbe, Path]:
    folder = tiny_long_context_model(tmp_path_factory.mktemp("running") / "a", 2048, seed=1)
    return TransformersProbe(TransformersProbeSettings(model=str(folder), threads=1)), folder


def resaved(source: Path, target: Path, **changes: object) -> tuple[Path, object]:
    """A copy of ``source`` whose tokenizer was loaded, changed and saved again, as a trainer does."""
    from transformers import AutoTokenizer

    shutil.copytree(source, target)
    tokenizer = AutoTokenizer.from_pretrained(source)
    for name, value in changes.items():
        setattr(tokenizer, name, value)
    return target, tokenizer


def test_a_tokenizer_saved_again_by_a_trainer_with_other_padding_reloads(
    running: tuple[TransformersProbe, Path], tmp_path: Path
) -> None:
    probe, folder = running
    target, tokenizer = resaved(folder, tmp_path / "resaved", padding_side="left", model_max_length=77)
    tokenizer.save_pretrained(target)  # type: ignore[attr-defined]
    staged = stage_reload(probe, target)
    assert staged.folder == target


def test_a_different_vocabulary_or_chat_template_is_refused_naming_it(
    running: tuple[TransformersProbe, Path], tmp_path: Path
) -> None:
    probe, folder = running
    target, tokenizer = resaved(folder, tmp_path / "vocab")
    tokenizer.add_tokens(["<new-token>"])  # type: ignore[attr-defined]
    tokenizer.save_pretrained(target)  # type: ignore[attr-defined]
    with pytest.raises(ReloadRefused, match="vocabulary or special tokens differ"):
        stage_reload(probe, target)
    target, tokenizer = resaved(folder, tmp_path / "template", chat_template="{{ messages[0]['content'] }}")
    tokenizer.save_pretrained(target)  # type: ignore[attr-defined]
    with pytest.raises(ReloadRefused, match="chat template differs"):
        stage_reload(probe, target)
