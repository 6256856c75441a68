"""What a checkpoint folder must look like before a reload reads or hashes anything in it, and what its
safetensors headers must say: checked from the files themselves, never from a loaded model (transformers
fills missing tensors with random weights).

:func:`check_folder_shape`: a ``config.json`` and weight files, each a regular file, the small files
size-bounded, so a folder such as ``/proc`` or ``/etc`` is refused before any file in it is read.
:func:`check_safetensors_files`: each file's header is read (bounded) and its tensors must lie inside the
file (a truncated file is refused by name); the tensor names and shapes of all files together must be
those the running checkpoint's files hold (or, without safetensors there, the model's state dict).
"""

from __future__ import annotations

import json
import stat
import struct
from collections.abc import Mapping
from pathlib import Path

MAX_SMALL_FILE_BYTES = 64 << 20  # config.json, tokenizer and generation files
MAX_HEADER_BYTES = 100 << 20  # what the safetensors format itself allows for a header
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
SHOWN = 5

Shapes = dict[str, tuple[int, ...]]


class CheckpointRefused(ValueError):
    """The folder's files cannot be a checkpoint of the running model; the message names the file."""


def _regular_size(path: Path) -> int:
    """The size of ``path``, a regular file (a link to one counts); refused otherwise."""
    try:
        info = path.stat()
    except OSError as error:
        raise CheckpointRefused(f"{path}: cannot be read: {error.strerror or error}") from error
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointRefused(f"{path}: not a regular file")
    return info.st_size


def check_folder_shape(folder: Path) -> list[Path]:
    """The folder's weight files, once it is shaped like a checkpoint (else :class:`CheckpointRefused`)."""
    if not folder.is_dir():
        raise CheckpointRefused(f"{folder}: no such folder")
    config = folder / "config.json"
    if not config.exists():
        raise CheckpointRefused(f"{folder}: no config.json")
    weights = sorted({path for pattern in WEIGHT_PATTERNS for path in folder.glob(pattern)})
    if not weights:
        raise CheckpointRefused(f"{folder}: no weights (*.safetensors or pytorch_model*.bin)")
    for path in (config, *weights):
        _regular_size(path)
    for path in folder.iterdir():
        if path in weights or path.name.startswith("."):
            continue
        if path.is_dir():
            continue  # sub-folders are not read (only top-level files are hashed or loaded)
        size = _regular_size(path)
        if size > MAX_SMALL_FILE_BYTES:
            raise CheckpointRefused(
                f"{path}: {size} bytes, over the limit of {MAX_SMALL_FILE_BYTES} for a checkpoint's "
                "config or tokenizer file"
            )
    return weights


def safetensors_shapes(path: Path) -> Shapes:
    """Tensor names and shapes from one file's header, once every tensor lies inside the file."""
    size = _regular_size(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise CheckpointRefused(f"{path.name}: truncated: {size} bytes, no safetensors header")
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise CheckpointRefused(
                    f"{path.name}: not a safetensors file or truncated (a {length}-byte header in a "
                    f"{size}-byte file)"
                )
            header = json.loads(handle.read(length))
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointRefused(f"{path.name}: the safetensors header cannot be read: {error}") from error
    if not isinstance(header, dict):
        raise CheckpointRefused(f"{path.name}: the safetensors header is not a JSON object")
    data_size = size - 8 - length
    shapes: Shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(dim) for dim in entry["shape"])
            start, end = (int(offset) for offset in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointRefused(f"{path.name}: tensor {name!r} has no valid shape/offsets") from error
        if not 0 <= start <= end <= data_size:
            raise CheckpointRefused(
                f"{path.name}: truncated or corrupt: tensor {name!r} ends at byte {end} of a "
                f"{data_size}-byte data section"
            )
        shapes[name] = shape
    return shapes


def folder_shapes(weights: list[Path]) -> Shapes | None:
    """The tensors of a folder's safetensors files together (None when it has none)."""
    files = [path for path in weights if path.suffix == ".safetensors"]
    if not files:
        return None
    shapes: Shapes = {}
    for path in files:
        shapes.update(safetensors_shapes(path))
    return shapes


def check_same_tensors(folder: Path, got: Shapes, expected: Mapping[str, tuple[int, ...]]) -> None:
    """:class:`CheckpointRefused` naming the tensors missing from, unexpected in, or of another shape in
    the folder's files, compared with ``expected``."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    reshaped = sorted(name for name in set(got) & set(expected) if tuple(got[name]) != tuple(expected[name]))
    problems = []
    for what, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)):
        if names:
            shown = ", ".join(names[:SHOWN]) + (
                f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            )
            problems.append(f"{len(names)} tensors {what} ({shown})")
    if problems:
        raise CheckpointRefused(
            f"{folder}: the weight files do not hold the running model's tensors: " + "; ".join(problems)
        )
