"""``_manifest.json``: what a build read, how it scored, with what, and what came out.

The :class:`BuildIdentity` is everything that decides the output rows, the probe's content identity
(:class:`schemas.ProbeIdentity`) included. A build refuses to continue in a folder whose identity differs
(unless told to overwrite), naming what changed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mig_annotator.builder.columns import ColumnMapping, DuplicatePolicy
from mig_annotator.builder.settings import DEFAULT_MAX_ROW_BYTES
from mig_annotator.builder.storage import write_bytes_atomic
from mig_annotator.schemas import ProbeIdentity, ScoringConfig

FORMAT_VERSION = 3  # 2: the probe identity is a content digest; rows carry probe_identity. 3: question_images
VERSIONED_PACKAGES = (
    "mig-annotator",
    "torch",
    "transformers",
    "numpy",
    "polars",
    "pyarrow",
    "math-verify",
    "pydantic",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputFingerprint(_Frozen):
    path: str
    format: str
    bytes: int
    sha256: str
    rows: int
    images_sha256: str | None = Field(
        default=None,
        description="sha256 over the image files the images column names by path (their names and contents), "
        "so a build follows the pixels; None: no image paths (bytes in the file are in ``sha256``).",
    )


class TokenizerIdentity(_Frozen):
    path: str
    fingerprint: str = Field(description="sha256 of the tokenizer files.")


class Layout(_Frozen):
    shard_rows: int = Field(ge=1)
    window_rows: int = Field(ge=1)
    group_rows: int = Field(ge=1)


class BuildIdentity(_Frozen):
    format_version: int = FORMAT_VERSION
    inputs: list[InputFingerprint]
    limit: int | None
    preset: str
    columns: ColumnMapping
    id_column_used: bool
    kept_columns: list[str]
    scoring: ScoringConfig
    config_hash: str
    probe: ProbeIdentity = Field(description="The probe: backend, model, dtype and weights digest.")
    policy_tokenizer: TokenizerIdentity | None
    layout: Layout
    on_duplicate_id: DuplicatePolicy = Field(
        default="keep", description="What the build does with rows whose id repeats an earlier row's."
    )
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES  # the build setting: which rows are rejects


class Counts(_Frozen):
    input_rows: int
    annotated: int
    rejected: int
    rejects_by_stage: dict[str, int]
    shards: int
    steps: int
    tokens_forwarded: int
    duplicate_ids: int = Field(
        default=0,
        description="Input rows whose id repeats an earlier row's id (rejected with --on-duplicate-id drop).",
    )


class Timings(_Frozen):
    started_at: str
    finished_at: str
    sessions: int = Field(description="How many runs it took (1 + resumes).")
    annotate_seconds: float = Field(description="Time spent preparing, scoring and writing rows.")
    probe_seconds: float = Field(description="Time inside the probe.")
    traces_per_second: float
    tokens_per_second: float
    last_session_seconds: float


class Manifest(_Frozen):
    status: Literal["building", "complete"]
    identity: BuildIdentity
    versions: dict[str, str]
    counts: Counts | None = None
    timings: Timings | None = None
    reward_stats: dict[str, Any] | None = None
    files: list[str] = Field(default_factory=list)


def read_manifest(path: Path) -> Manifest | None:
    if not path.is_file():
        return None
    return Manifest.model_validate_json(path.read_text(encoding="utf-8"))


def write_manifest(path: Path, manifest: Manifest) -> None:
    write_bytes_atomic(path, (manifest.model_dump_json(indent=2) + "\n").encode())


def identity_differences(old: BuildIdentity, new: BuildIdentity) -> list[str]:
    """Dotted names of the settings that differ, e.g. ``inputs[0].sha256`` or ``config_hash``."""
    return _differences(old.model_dump(mode="json"), new.model_dump(mode="json"), "")


def _differences(old: Any, new: Any, where: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            found += _differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            diff
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for diff in _differences(a, b, f"{where}[{i}]")
        ]
    return [] if old == new else [where or "identity"]


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def folder_fingerprint(folder: Path, hashed: tuple[str, ...], sized_suffixes: tuple[str, ...]) -> str:
    """sha256 over the contents of the ``hashed`` files and the names and sizes of files with the suffixes."""
    digest = hashlib.sha256()
    for name in hashed:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.endswith(sized_suffixes):
            digest.update(f"{path.name}:{path.stat().st_size}\0".encode())
    return digest.hexdigest()


def tokenizer_identity(path: Path) -> TokenizerIdentity:
    files = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
    return TokenizerIdentity(
        path=str(path.resolve()), fingerprint=folder_fingerprint(path, files, (".model",))
    )
