"""The input of every annotation: one reasoning trace.

The rules live here, so the service, the CLI and the builder share them, and the JSON schema carries them:
the question, the reference answer and the reasoning (a completion, or at least one step) hold text that is
not all whitespace; exactly one of ``steps`` and ``completion``; an optional group id is not blank and at most
:data:`MAX_GROUP_ID_CHARS` characters; metadata holds only finite numbers.
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

_PYTHON_WHITESPACE = (
    r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"  # what str.isspace() says
)
NOT_BLANK_PATTERN = f"[^{_PYTHON_WHITESPACE}]"
"""A JSON-schema pattern for "holds a character that is not whitespace": an explicit class, so ECMA-262 and
Python regexes (whose ``\\s`` differ) both mean exactly ``not text.isspace()``."""


def has_text(text: str) -> bool:
    """True when ``text`` holds a character that is not whitespace (the rule of :data:`NOT_BLANK_PATTERN`)."""
    return not text.isspace() and text != ""


def _require_text(text: str) -> str:
    if not has_text(text):
        raise ValueError("must not be empty or whitespace")
    return text


NonBlankText = Annotated[
    StrictStr,
    AfterValidator(_require_text),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": NOT_BLANK_PATTERN}),
]
"""A string with at least one character that is not whitespace; the schema says so by its pattern."""

MAX_GROUP_ID_CHARS = 256
"""The longest group id (verl's ``uid`` is a 36-character UUID; a question id or a hash fits easily)."""

GroupId = Annotated[
    StrictStr,
    Field(max_length=MAX_GROUP_ID_CHARS),
    AfterValidator(_require_text),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_GROUP_ID_CHARS, "pattern": NOT_BLANK_PATTERN}
    ),
]
"""A group label: not blank, at most :data:`MAX_GROUP_ID_CHARS` characters."""


def group_id_of(label: str | int | None) -> str | None:
    """A valid group id for a trainer's or a dataset's group label: its text; ``sha256:<hex>`` of the text
    when that is longer than :data:`MAX_GROUP_ID_CHARS` (equal labels still give equal ids); None for no
    label or a blank one. Booleans are not labels (TypeError)."""
    if label is None:
        return None
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise TypeError(f"a group label is text or an integer, got {type(label).__name__}")
    text = str(label)
    if not has_text(text):
        return None
    if len(text) > MAX_GROUP_ID_CHARS:
        return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


def _exactly_one_reasoning_field(schema: dict[str, Any]) -> None:
    """Exactly one of steps/completion is given and not null (null counts as absent, as in the model)."""
    schema["oneOf"] = [
        {"required": ["steps"], "properties": {"steps": {"type": "array"}}},
        {"required": ["completion"], "properties": {"completion": {"type": "string"}}},
    ]


class Trace(BaseModel):
    """A question, the policy's reasoning (explicit steps or a raw completion) and the reference answer."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, json_schema_extra=_exactly_one_reasoning_field
    )

    id: StrictStr = Field(min_length=1, description="Caller's identifier, echoed in the annotation.")
    question: NonBlankText = Field(description="The prompt the policy answered (not blank).")
    steps: list[NonBlankText] | None = Field(
        default=None,
        min_length=1,
        description="Pre-segmented chain-of-thought steps, at least one, none blank (the last may hold the "
        "final answer).",
    )
    completion: NonBlankText | None = Field(
        default=None, description="The raw completion (not blank), segmented by the configured segmenter."
    )
    reference_answer: NonBlankText = Field(
        description="The gold final answer (not blank), teacher-forced by the probe."
    )
    group_id: GroupId | None = Field(
        default=None,
        description="Traces of one GRPO group (e.g. verl's uid): batchers keep a group in one probe call so "
        f"its question prompt is forwarded once. Optional; not blank, at most {MAX_GROUP_ID_CHARS} "
        "characters. It decides which traces share a probe call, never how a trace is scored.",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form, passed through untouched; numbers in it must be finite.",
    )

    @field_validator("metadata")
    @classmethod
    def _finite_numbers(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_finite(value, "metadata")
        return value

    @model_validator(mode="after")
    def _exactly_one_reasoning_field(self) -> Trace:
        if (self.steps is None) == (self.completion is None):
            raise ValueError("give exactly one of `steps` or `completion`")
        return self


def _check_finite(value: Any, where: str) -> None:
    """Raise naming the first NaN or infinity inside nested dicts and lists (JSON cannot hold them).
    Iterative, so deep nesting cannot exhaust the stack."""
    pending: list[tuple[Any, str]] = [(value, where)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{path}: must be a finite number, got {item}")
        if isinstance(item, dict):
            pending.extend((inner, f"{path}.{key}") for key, inner in reversed(item.items()))
        elif isinstance(item, list | tuple):
            pending.extend((inner, f"{path}[{index}]") for index, inner in reversed(list(enumerate(item))))
