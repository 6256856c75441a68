"""The input of every annotation: one reasoning trace.

The rules live here, so the service, the CLI and the builder share them, and the JSON schema carries them:
the question, the reference answer and the reasoning (a completion, or at least one step) hold text that is
not all whitespace; exactly one of ``steps`` and ``completion``; metadata holds only finite numbers. What a
field may be given as (chat messages, a numeric answer, an integer or overlong group id) and how it becomes
the text the trace holds is :mod:`mig_annotator.schemas.trace_fields`, the one set of rules of the service,
``score`` and ``build``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from mig_annotator.schemas.trace_fields import (
    ASSISTANT_ROLE,
    MAX_GROUP_ID_CHARS,
    USER_ROLE,
    FieldProblem,
    answer_text,
    as_pydantic,
    chat_text,
    group_id_of,
    has_text,
    is_image_part,
)
from mig_annotator.schemas.trace_images import (
    TraceImage,
    current_image_reading,
    image_from_bytes,
    read_image_part,
)

_PYTHON_WHITESPACE = (
    r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"  # what str.isspace() says
)
NOT_BLANK_PATTERN = f"[^{_PYTHON_WHITESPACE}]"
"""A JSON-schema pattern for "holds a character that is not whitespace": an explicit class, so ECMA-262 and
Python regexes (whose ``\\s`` differ) both mean exactly ``not text.isspace()``."""


def _require_text(text: str) -> str:
    if not has_text(text):
        raise as_pydantic(FieldProblem("must not be empty or whitespace"))
    return text


NonBlankText = Annotated[
    StrictStr,
    AfterValidator(_require_text),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": NOT_BLANK_PATTERN}),
]
"""A string with at least one character that is not whitespace; the schema says so by its pattern."""


def _ruled(rule: Callable[[Any], Any]) -> BeforeValidator:
    """A field's rule from :mod:`trace_fields`, its problems reported as the field's validation errors."""

    def apply(value: Any) -> Any:
        try:
            return rule(value)
        except FieldProblem as problem:
            raise as_pydantic(problem) from None

    return BeforeValidator(apply)


def _text_or_chat(role: str) -> Callable[[Any], Any]:
    def rule(value: Any) -> Any:
        value = chat_text(value, role)
        if value is not None and not isinstance(value, str):
            raise FieldProblem(f"holds {type(value).__name__}, expected text or chat messages")
        return value

    return rule


_CHAT_SCHEMA: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["content"],
        "properties": {
            "role": {"type": ["string", "null"]},
            "content": {
                "anyOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "anyOf": [
                                {
                                    "type": "object",
                                    "required": ["text"],
                                    "properties": {"text": {"type": "string"}},
                                },
                                {
                                    "type": "object",
                                    "required": ["type"],
                                    "properties": {"type": {"enum": ["image", "image_url"]}},
                                },
                            ]
                        },
                    },
                ]
            },
        },
    },
}
"""Chat messages as the JSON schema declares them (what :func:`trace_fields.chat_text` accepts)."""

_NOT_BLANK_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": NOT_BLANK_PATTERN}

QuestionText = Annotated[
    NonBlankText,
    _ruled(_text_or_chat(USER_ROLE)),
    WithJsonSchema({"anyOf": [_NOT_BLANK_SCHEMA, _CHAT_SCHEMA]}),
]
"""The question: text, or chat messages whose user turns are the text."""

CompletionText = Annotated[
    NonBlankText,
    _ruled(_text_or_chat(ASSISTANT_ROLE)),
    WithJsonSchema({"anyOf": [_NOT_BLANK_SCHEMA, _CHAT_SCHEMA]}),
]
"""The completion: text, or chat messages whose assistant turns are the text."""

AnswerText = Annotated[
    NonBlankText,
    _ruled(answer_text),
    WithJsonSchema({"anyOf": [_NOT_BLANK_SCHEMA, {"type": "number"}]}),
]
"""The reference answer: text, or a number (its text by :func:`trace_fields.number_text`)."""

GroupId = Annotated[
    StrictStr | None,
    _ruled(group_id_of),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}),
]
"""A group label: text or an integer, hashed when over :data:`MAX_GROUP_ID_CHARS` characters; null or
blank: no group."""


def _exactly_one_reasoning_field(schema: dict[str, Any]) -> None:
    """Exactly one of steps/completion is given and not null (null counts as absent, as in the model)."""
    schema["oneOf"] = [
        {"required": ["steps"], "properties": {"steps": {"type": "array"}}},
        {"required": ["completion"], "properties": {"completion": {"type": ["string", "array"]}}},
    ]


class Trace(BaseModel):
    """A question, the policy's reasoning (explicit steps or a raw completion) and the reference answer."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, json_schema_extra=_exactly_one_reasoning_field
    )

    id: StrictStr = Field(min_length=1, description="Caller's identifier, echoed in the annotation.")
    question: QuestionText = Field(
        description="The prompt the policy answered (not blank): text, or chat messages (the user turns)."
    )
    steps: list[NonBlankText] | None = Field(
        default=None,
        min_length=1,
        description="Pre-segmented chain-of-thought steps, at least one, none blank (the last may hold the "
        "final answer).",
    )
    completion: CompletionText | None = Field(
        default=None,
        description="The raw completion (not blank), segmented by the configured segmenter: text, or chat "
        "messages (the assistant turns).",
    )
    reference_answer: AnswerText = Field(
        description="The gold final answer (not blank), teacher-forced by the probe: text, or a number "
        "(42 and 42.0 give '42')."
    )
    group_id: GroupId = Field(
        default=None,
        description="Traces of one GRPO group (e.g. verl's uid): batchers keep a group in one probe call so "
        f"its question prompt is forwarded once. Optional: text or an integer (7 and '7' are one group), "
        f"sha256:<hex> of the text when over {MAX_GROUP_ID_CHARS} characters; null or blank: no group. "
        "It decides which traces share a probe call, never how a trace is scored.",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form, passed through untouched; numbers in it must be finite.",
    )
    images: SkipJsonSchema[tuple[TraceImage, ...]] = Field(
        default=(),
        description="The question's images, in order, read from its chat messages' image parts (not given "
        "directly in JSON): their bytes, which the trace's identity covers.",
    )

    @model_validator(mode="before")
    @classmethod
    def _question_images(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("images"):  # a trace's own dump (the Python client sends it so): the limits still hold
            return {**data, "images": _checked_given_images(data["images"], info.context)}
        images = question_images(data.get("question"), info.context)
        return {**data, "images": images} if images else data

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


def question_images(question: Any, context: dict[str, Any] | None) -> tuple[TraceImage, ...]:
    """The images of a question's chat messages, in order (:mod:`schemas.trace_images`). ``context``:
    ``image_base_dir`` (relative paths), ``allow_image_paths``, ``image_limits``, over the reading in force
    (:func:`schemas.trace_images.image_reading`; by default paths are read, against the working folder)."""
    if not isinstance(question, list):
        return ()
    parts = [
        (f"question[{m}].content[{p}].{part.get('type')}", part)
        for m, message in enumerate(question)
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for p, part in enumerate(message["content"])
        if is_image_part(part)
    ]
    if not parts:
        return ()
    reading = current_image_reading(context)
    limits = reading.limits
    if len(parts) > limits.max_images:
        raise as_pydantic(
            FieldProblem(f"question: {len(parts)} images, over the limit of {limits.max_images} per question")
        )
    try:
        return tuple(
            read_image_part(
                part, where, base_dir=reading.base_dir, allow_paths=reading.allow_paths, limits=limits
            )
            for where, part in parts
        )
    except FieldProblem as problem:
        raise as_pydantic(problem) from None


def _checked_given_images(images: Any, context: dict[str, Any] | None) -> Any:
    """Images given directly (a trace's own dump), each read again from its bytes: the count, bytes and
    pixel limits are checked on what the bytes hold, and a declared size or format that differs is refused
    (nothing declared is trusted). What is not an image at all is left to the field's own validation."""
    limits = current_image_reading(context).limits
    if not isinstance(images, list | tuple):
        return images
    if len(images) > limits.max_images:
        raise as_pydantic(
            FieldProblem(f"images: {len(images)} images, over the limit of {limits.max_images} per question")
        )
    checked: list[Any] = []
    for index, image in enumerate(images):
        data = (
            image.data
            if isinstance(image, TraceImage)
            else image.get("data")
            if isinstance(image, dict)
            else None
        )
        if (
            isinstance(data, str | bytes)
            and len(data) > limits.max_image_bytes * (4 / 3 if isinstance(data, str) else 1) + 4
        ):
            raise as_pydantic(
                FieldProblem(f"images[{index}]: over the limit of {limits.max_image_bytes} bytes per image")
            )
        try:
            declared = image if isinstance(image, TraceImage) else TraceImage.model_validate(image)
        except ValidationError:
            checked.append(image)  # the field's validation names what is wrong with it
            continue
        try:
            read = image_from_bytes(declared.data, limits)
        except FieldProblem as problem:
            raise as_pydantic(FieldProblem(f"images[{index}]: {problem}")) from None
        said = (declared.width, declared.height, declared.format)
        if said != (read.width, read.height, read.format):
            raise as_pydantic(
                FieldProblem(
                    f"images[{index}]: declares {declared.width}x{declared.height} {declared.format}, "
                    f"but its data is a {read.width}x{read.height} {read.format} image"
                )
            )
        checked.append(read)
    return checked


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
