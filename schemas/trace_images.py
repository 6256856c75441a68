"""Images in a trace's question: chat content parts read into bytes, checked against typed limits.

A question given as chat messages may hold image parts beside its text parts, in the forms TRL, verl, vLLM
and the OpenAI API use::

    {"type": "image", "image": "scene.png"}                 # a local path (or a data: URL, or base64)
    {"type": "image", "path": "scene.png"}                  # Hugging Face chat-template keys
    {"type": "image", "base64": "<base64 data>"}
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,<base64 data>"}}

Each becomes a :class:`TraceImage` holding the file's BYTES (and their sha256), so a trace's identity follows
the pixels, never the path. A relative path is read against the validation context's ``image_base_dir`` (the
folder of the input file for ``score`` and ``build``); a caller that must not read local files (the service)
sets ``allow_image_paths`` False. Remote URLs are refused (nothing is downloaded). :class:`ImageLimits` bounds
the count, the bytes and the pixels; Pillow (the ``vision`` extra) reads an image's size, lazily.

Problems raise :class:`FieldProblem` naming the part: ``question[0].content[1].image: no such file 'x.png'``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import re
import stat
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mig_annotator.schemas.trace_fields import FieldProblem

_SOURCE_KEYS = ("image", "path", "url", "base64")


class ImageLimits(BaseModel):
    """What one trace's question may hold in images (validation context key ``image_limits``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_images: int = Field(default=8, ge=0, description="Images per question.")
    max_image_bytes: int = Field(default=10 * 2**20, ge=1, description="Encoded bytes of one image.")
    max_image_pixels: int = Field(default=4096 * 4096, ge=1, description="Width x height of one image.")


DEFAULT_IMAGE_LIMITS = ImageLimits()


@dataclass(frozen=True, slots=True)
class ImageReading:
    """How image parts are read where no validation context says: the service reads no local files."""

    allow_paths: bool = True
    limits: ImageLimits = DEFAULT_IMAGE_LIMITS
    base_dir: Path | None = None


_DEFAULT_READING = ImageReading()
_READING: ContextVar[ImageReading | None] = ContextVar("image_reading", default=None)


def current_image_reading(context: dict[str, Any] | None) -> ImageReading:
    """The validation context's keys (``image_base_dir``, ``allow_image_paths``, ``image_limits``) over the
    reading in force (:func:`image_reading`)."""
    reading = _READING.get() or _DEFAULT_READING
    if not context:
        return reading
    limits = context.get("image_limits", reading.limits)
    base_dir = context.get("image_base_dir", reading.base_dir)
    return ImageReading(
        allow_paths=context.get("allow_image_paths", reading.allow_paths),
        limits=limits if isinstance(limits, ImageLimits) else ImageLimits.model_validate(limits),
        base_dir=Path(base_dir) if base_dir is not None else None,
    )


@contextlib.contextmanager
def image_reading(reading: ImageReading) -> Iterator[None]:
    """Traces validated inside read their image parts as ``reading`` says (the service: no paths)."""
    token = _READING.set(reading)
    try:
        yield
    finally:
        _READING.reset(token)


class TraceImage(BaseModel):
    """One image of a question: its encoded bytes (PNG, JPEG, ...) and what was read from them."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    data: bytes = Field(repr=False, description="The encoded image file's bytes.")
    sha256: str = Field(description="sha256 of ``data`` (hex): what the trace's identity covers.")
    format: str = Field(description="The image format Pillow read (PNG, JPEG, ...).")
    width: int = Field(ge=1)
    height: int = Field(ge=1)

    @model_validator(mode="after")
    def _digest_matches(self) -> TraceImage:
        if hashlib.sha256(self.data).hexdigest() != self.sha256:
            raise ValueError("sha256 is not the sha256 of data")
        return self


def read_image_part(
    part: dict[str, Any], where: str, *, base_dir: Path | None, allow_paths: bool, limits: ImageLimits
) -> TraceImage:
    """The image of one content part; ``where`` names the part in every problem."""
    try:
        data = _part_bytes(part, base_dir=base_dir, allow_paths=allow_paths, limits=limits)
        return image_from_bytes(data, limits)
    except FieldProblem as problem:
        raise FieldProblem(f"{where}: {problem}") from None


def image_from_bytes(data: bytes, limits: ImageLimits = DEFAULT_IMAGE_LIMITS) -> TraceImage:
    """A :class:`TraceImage` for encoded bytes, checked against ``limits`` (Pillow reads the header only)."""
    if len(data) > limits.max_image_bytes:
        raise FieldProblem(f"{len(data)} bytes, over the limit of {limits.max_image_bytes} per image")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - the vision extra is missing
        raise FieldProblem("images need Pillow: pip install 'mig-annotator[vision]'") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, image_format = image.width, image.height, image.format or "unknown"
    except Image.DecompressionBombError as error:  # a header declaring billions of pixels
        raise FieldProblem(
            f"over the limit of {limits.max_image_pixels} pixels per image: Pillow refuses its header as a "
            f"decompression bomb ({error})"
        ) from None
    except UnidentifiedImageError:  # its message holds the buffer's memory address: not reproducible
        raise FieldProblem("not an image Pillow can read (no image format recognised)") from None
    except (OSError, ValueError) as error:
        raise FieldProblem(f"not an image Pillow can read ({_without_addresses(error)})") from None
    except Exception as error:  # Pillow's format plugins raise other kinds on hostile headers
        raise FieldProblem(
            f"not an image Pillow can read ({type(error).__name__}: {_without_addresses(error)})"
        ) from None
    if width * height > limits.max_image_pixels:
        raise FieldProblem(
            f"{width}x{height} = {width * height} pixels, "
            f"over the limit of {limits.max_image_pixels} per image"
        )
    return TraceImage(
        data=data, sha256=hashlib.sha256(data).hexdigest(), format=image_format, width=width, height=height
    )


_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def _without_addresses(error: BaseException) -> str:
    """An error's text without object reprs (``<_io.BytesIO object at 0x...>``): reasons are reproducible."""
    return _OBJECT_REPR.sub("", str(error)).strip() or type(error).__name__


def _part_bytes(
    part: dict[str, Any], *, base_dir: Path | None, allow_paths: bool, limits: ImageLimits
) -> bytes:
    source = _part_source(part)
    if isinstance(source, bytes | bytearray):
        return bytes(source)
    if not isinstance(source, str) or not source:
        raise FieldProblem("expected a path, a data: URL or base64 text")
    if source.startswith("data:"):
        header, _, payload = source.partition(",")
        if not header.endswith(";base64"):
            raise FieldProblem("a data: URL must be base64 (data:image/png;base64,...)")
        return _decoded(payload, limits)
    if source.startswith(("http://", "https://")):
        raise FieldProblem("remote image URLs are not fetched: give a local path or the data (base64)")
    if "base64" in part:
        return _decoded(source, limits)
    if not allow_paths:
        raise FieldProblem("image paths are not read here: give the data (base64 or a data: URL)")
    path = Path(source)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return read_image_file(path, limits.max_image_bytes)


def read_image_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of an image file: a regular, non-empty file whose size is checked before reading, and
    never more than ``max_bytes`` + 1 bytes read (pseudo-files such as ``/proc/self/pagemap`` report size 0
    and hold far more; ``/proc/self/mem`` fails to read): any other case raises :class:`FieldProblem`."""
    try:
        info = path.stat()
    except (OSError, ValueError):
        raise FieldProblem(f"no such file {str(path)!r}") from None
    if not stat.S_ISREG(info.st_mode):
        raise FieldProblem(f"{str(path)!r} is not a regular file")
    if info.st_size == 0:
        raise FieldProblem(f"{str(path)!r} is empty (or a pseudo-file whose size is unknown)")
    if info.st_size > max_bytes:
        raise FieldProblem(f"{info.st_size} bytes, over the limit of {max_bytes} per image")
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise FieldProblem(f"cannot read {str(path)!r} ({error.strerror or type(error).__name__})") from None
    if len(data) > max_bytes:
        raise FieldProblem(f"{str(path)!r} holds more than {max_bytes} bytes, the limit per image")
    return data


def _part_source(part: dict[str, Any]) -> Any:
    if part.get("type") == "image_url":
        inner = part.get("image_url")
        url = inner.get("url") if isinstance(inner, dict) else inner
        if url is None:
            raise FieldProblem("an image_url part needs image_url.url")
        return url
    given = [key for key in _SOURCE_KEYS if part.get(key) is not None]
    if len(given) != 1:
        raise FieldProblem(f"an image part needs exactly one of {', '.join(_SOURCE_KEYS)}; got {len(given)}")
    return part[given[0]]


def _decoded(payload: str, limits: ImageLimits) -> bytes:
    if len(payload) > (limits.max_image_bytes * 4) // 3 + 4:
        raise FieldProblem(f"base64 data over the limit of {limits.max_image_bytes} bytes per image")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise FieldProblem("not valid base64 data") from None


def image_column_parts(value: Any) -> list[dict[str, Any]]:
    """The image parts of a dataset's image column value: a path (relative to the input file), the bytes,
    a ``{"bytes", "path"}`` struct (Hugging Face datasets' Image feature), or a list of these."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    parts = []
    for index, item in enumerate(items):
        source = item
        if isinstance(item, dict):
            source = item.get("bytes") if item.get("bytes") is not None else item.get("path")
        if not isinstance(source, str | bytes | bytearray) or not source:
            where = f"[{index}]: " if isinstance(value, list | tuple) else ""
            raise FieldProblem(
                f"{where}holds {type(item).__name__}, expected a path, bytes or {{bytes, path}}"
            )
        parts.append({"type": "image", "image": source})
    return parts


def question_with_images(question: Any, parts: list[dict[str, Any]]) -> Any:
    """The question with ``parts`` at the start of its (first) user turn; text becomes one user message."""
    if not parts:
        return question
    if isinstance(question, str):
        return [{"role": "user", "content": [*parts, {"type": "text", "text": question}]}]
    if not isinstance(question, list) or not all(isinstance(message, dict) for message in question):
        return question  # not text nor chat messages: the trace's own rules say why
    roles = [message.get("role") for message in question]
    at = roles.index("user") if "user" in roles else 0
    messages = [dict(message) for message in question]
    content = messages[at].get("content")
    text = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    messages[at]["content"] = [*parts, *text]
    return messages


THUMBNAIL_SIDE = 96


def thumbnail_png(image: TraceImage, side: int = THUMBNAIL_SIDE) -> bytes:
    """A PNG of ``image`` scaled to fit ``side`` x ``side`` pixels (the report's thumbnail)."""
    from PIL import Image

    with Image.open(io.BytesIO(image.data)) as opened:
        small = opened.convert("RGB")
        small.thumbnail((side, side))
        out = io.BytesIO()
        small.save(out, format="PNG")
    return out.getvalue()
