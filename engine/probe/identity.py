"""Content digests of model and tokenizer folders, for :meth:`engine.probe.base.Probe.identity`.

A folder's digest is sha256 over the sorted names and the sha256 of the contents of the files that decide
a probe's numbers: every top-level file except hidden files, docs (``*.md``, ``LICENSE*``) and our
conversion marker (it records tool versions, not weights). A file's sha256 is cached by (resolved path,
size, mtime) in this process and in ``<model cache>/.file-digests.json``, so a 1 GB checkpoint is read once;
editing a file changes its size or mtime and so its cache key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from mig_annotator.engine.model_store import MARKER_FILE, default_cache_dir, file_sha256, resolve_model_path
from mig_annotator.schemas.probe import ProbeIdentity

CACHE_FILE = ".file-digests.json"
_SKIPPED_SUFFIXES = (".md",)
_SKIPPED_PREFIXES = (".", "LICENSE", "README")
_memory: dict[str, str] = {}
_lock = threading.Lock()


def file_digest(path: Path, cache_file: Path | None = None) -> str:
    """sha256 (hex) of a file's contents, cached by (resolved path, size, mtime)."""
    resolved = path.resolve()
    status = resolved.stat()
    key = f"{resolved}|{status.st_size}|{status.st_mtime_ns}"
    with _lock:
        if key in _memory:
            return _memory[key]
    cache_path = cache_file or default_cache_dir() / CACHE_FILE
    stored = _read_cache(cache_path)
    digest = stored.get(key)
    if digest is None:
        digest = file_sha256(resolved)
        _write_cache(cache_path, key, digest)
    with _lock:
        _memory[key] = digest
    return digest


def folder_digest(folder: Path, cache_file: Path | None = None, *, tokenizer_only: bool = False) -> str:
    """sha256 over the names and content digests of the folder's files that decide a probe's numbers
    (``tokenizer_only``: of its tokenizer files alone)."""
    counts = _is_tokenizer_file if tokenizer_only else _counts
    files = [path for path in sorted(folder.iterdir()) if path.is_file() and counts(path.name)]
    if not files:
        what = "tokenizer" if tokenizer_only else "model or tokenizer"
        raise FileNotFoundError(f"{folder}: no {what} files to fingerprint")
    combined = hashlib.sha256()
    for path in files:
        combined.update(f"{path.name}\0{file_digest(path, cache_file)}\0".encode())
    return combined.hexdigest()


def local_model_identity(folder: Path, backend: str, dtype: str) -> ProbeIdentity:
    """The identity of a probe that loads the model in ``folder`` (weights and tokenizer files)."""
    return ProbeIdentity(model=folder.name, digest=folder_digest(folder), backend=backend, dtype=dtype)


def _is_tokenizer_file(name: str) -> bool:
    return name.startswith(
        ("tokenizer", "vocab", "merges", "special_tokens", "added_tokens", "chat_template")
    ) or (name.endswith((".model", ".tiktoken")))


def _counts(name: str) -> bool:
    return (
        name != MARKER_FILE
        and not name.startswith(_SKIPPED_PREFIXES)
        and not name.endswith(_SKIPPED_SUFFIXES)
    )


def _read_cache(path: Path) -> dict[str, str]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _write_cache(path: Path, key: str, digest: str) -> None:
    """Best effort: a cache that cannot be written (read-only home) only costs a re-hash next time."""
    try:
        entries = _read_cache(path)
        entries = {k: v for k, v in entries.items() if not k.startswith(key.rsplit("|", 2)[0] + "|")}
        entries[key] = digest
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(entries, out)
        os.replace(temporary, path)
    except OSError:
        return


def expected_local_identity(settings: Any) -> ProbeIdentity:
    """The identity of a probe that will load its settings' local model folder (``model``, ``dtype``)."""
    return local_model_identity(resolve_model_path(settings.model), settings.backend, settings.dtype)
