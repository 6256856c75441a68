"""The one set of rules that turns a trace field as given into the text a :class:`schemas.Trace` holds.

The service (a request's traces), ``score`` (JSON Lines rows) and ``build`` (dataset columns) all read a
trace through :class:`schemas.Trace`, whose fields apply these rules before checking the result:

- ``question``: text, or chat messages (``[{"role", "content"}]``): the ``user`` turns joined by a blank line
  (all turns when none is a user turn); a message's content is text or a list of parts ``{"text": ...}``.
- ``completion``: text, or chat messages: the ``assistant`` turns, joined the same way.
- ``reference_answer``: text, or a number: an integer as its digits, an integral float without its ``.0``
  (``42.0`` gives ``"42"``, so a file whose column holds floats reads as one that holds integers), any other
  float in Python's shortest round-trip form (``0.5``, ``1e-05``). Booleans, NaN and infinities are refused.
- ``group_id``: text or an integer (``7`` and ``"7"`` are one group); longer than
  :data:`MAX_GROUP_ID_CHARS` characters: ``sha256:<hex>`` of the text (equal labels still give equal ids);
  null, empty or blank: no group. Lists, objects, floats and booleans are refused (never turned into text).

Each rule raises :class:`FieldProblem` with a message that reads after the field's name
(``traces[3].reference_answer: must not be empty``).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from pydantic_core import PydanticCustomError

MAX_GROUP_ID_CHARS = 256
"""The longest group id kept as given (verl's ``uid`` is a 36-character UUID); longer ones are hashed."""

USER_ROLE = "user"
IMAGE_PART_TYPES = frozenset({"image", "image_url"})
"""Content-part types that hold an image (:mod:`mig_annotator.schemas.trace_images`), not text."""
ASSISTANT_ROLE = "assistant"


class FieldProblem(ValueError):
    """A trace field that cannot be read as given; the message names no field (the caller does)."""


def has_text(text: str) -> bool:
    """True when ``text`` holds a character that is not whitespace."""
    return not text.isspace() and text != ""


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def chat_text(value: Any, role: str) -> Any:
    """``value`` unchanged unless it is a list of chat messages: then the text of its ``role`` turns."""
    if not isinstance(value, list) or not value or not all(isinstance(item, dict) for item in value):
        if isinstance(value, list):
            raise FieldProblem("must be text or a non-empty list of chat messages")
        return value
    if any("content" not in message for message in value):
        raise FieldProblem("chat messages need a 'content' key")
    for message in value:
        message_role = message.get("role")
        if message_role is not None and not isinstance(message_role, str):
            raise FieldProblem(f"a chat message's role is {_kind(message_role)}, expected text")
    chosen = [message for message in value if message.get("role") == role] or value
    return "\n\n".join(_content_text(message["content"], images=role == USER_ROLE) for message in chosen)


def is_image_part(part: Any) -> bool:
    """Whether a content part is an image part (a dict whose ``type`` is one of :data:`IMAGE_PART_TYPES`;
    a ``type`` that is not a string, as a fuzzer sends, is no image part)."""
    return isinstance(part, dict) and isinstance(part.get("type"), str) and part["type"] in IMAGE_PART_TYPES


def _content_text(content: Any, *, images: bool) -> str:
    """The text of a message's content; image parts (``images``: the question's) hold no text and are read
    by :mod:`mig_annotator.schemas.trace_images`."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []  # OpenAI-style: [{"type": "text", "text": ...}]
    pictures = [part for part in parts if is_image_part(part)]
    if pictures and not images:
        raise FieldProblem("holds an image part; images are read only in the question")
    texts = [part for part in parts if not (pictures and part in pictures)]
    if parts and all(isinstance(part, dict) and isinstance(part.get("text"), str) for part in texts):
        return "".join(part["text"] for part in texts)
    raise FieldProblem("a chat message's content is not text (a string, or parts with 'text' or an image)")


def number_text(value: int | float) -> str:
    """The text of a numeric answer (the module's rule)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FieldProblem(f"must be a finite number, got {value}")
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    return str(value)


def answer_text(value: Any) -> Any:
    """A numeric answer as its text; other values unchanged (text is checked by the field's type)."""
    if isinstance(value, bool):
        raise FieldProblem("holds a boolean, expected the answer (text or a number)")
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, list):
        raise FieldProblem(f"holds a list of {len(value)} values; give one answer (text or a number)")
    return value


def group_id_of(label: Any) -> str | None:
    """The group id for a label (the module's rule): its text, hashed when over
    :data:`MAX_GROUP_ID_CHARS` characters; None for no label or a blank one."""
    if label is None:
        return None
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise FieldProblem(f"holds {_kind(label)}, expected text or an integer")
    text = str(label)
    if not has_text(text):
        return None
    if len(text) > MAX_GROUP_ID_CHARS:
        return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


def as_pydantic(problem: FieldProblem) -> PydanticCustomError:
    """The problem as a validation error whose message is the problem's own (no 'Value error,' prefix)."""
    return PydanticCustomError("trace_field", "{reason}", {"reason": str(problem)})
