"""Which input columns hold the id, the question, the reasoning, the reference answer and the GRPO group;
presets for common layouts.

A column name may be a dotted path into a struct column (``reward_model.ground_truth``); a top-level column
with the literal dotted name wins over the path. The group column is optional: where the inputs lack it, or a
row's value is null or blank, the trace has no group id. It is still copied to the output like any unmapped
column (the dataset rows have no group field), and it never changes how the rows are cut or scored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DuplicatePolicy = Literal["keep", "drop", "error"]
"""What a build does with a row whose id repeats an earlier row's (``--on-duplicate-id``)."""

PresetName = Literal["default", "verl", "trl", "gsm8k"]
OPTIONAL_FIELDS = frozenset({"group_id", "images"})
"""Trace fields whose column may be absent from the inputs (no group ids, no images)."""


class ColumnMapping(BaseModel):
    """Input columns for the trace fields. Exactly one of ``completion`` and ``steps``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(
        default="id",
        description="The row id column; None, or a missing column not named explicitly, generates "
        "row-<index> ids.",
    )
    id_required: bool = Field(
        default=False, description="Fail when the id column is missing (else ids are generated)."
    )
    question: str = Field(default="question", description="The question column (text or chat messages).")
    completion: str | None = Field(default="completion", description="The raw completion column.")
    steps: str | None = Field(
        default=None, description="A column of pre-segmented steps (lists of text), in place of completion."
    )
    answer: str = Field(
        default="reference_answer", description="The reference answer column (dots reach into structs)."
    )
    images: str | None = Field(
        default="images",
        description="The question's images (paths relative to the input file, bytes, {bytes, path} structs, "
        "or lists of them), put before the question text in its user turn; optional: a column absent "
        "from the inputs, or a null value, means no images; None reads none.",
    )
    group_id: str | None = Field(
        default="group_id",
        description="The GRPO group of a row (e.g. a question id, verl's uid), passed to the trace as its "
        "group_id; optional: a column absent from the inputs means no group ids; None reads none.",
    )

    @model_validator(mode="after")
    def _one_reasoning_column(self) -> ColumnMapping:
        if (self.completion is None) == (self.steps is None):
            raise ValueError("map exactly one of the completion column and the steps column")
        return self

    def mapped(self) -> dict[str, str]:
        """Trace field -> input column, for the columns this mapping reads."""
        pairs = {
            "id": self.id,
            "question": self.question,
            "completion": self.completion,
            "steps": self.steps,
            "reference_answer": self.answer,
            "group_id": self.group_id,
            "images": self.images,
        }
        return {field: column for field, column in pairs.items() if column is not None}

    def content_columns(self) -> set[str]:
        """The input columns whose values the dataset rows hold (all mapped columns but the group's and the
        images')."""
        return {column for field, column in self.mapped().items() if field not in OPTIONAL_FIELDS}


PRESETS: dict[PresetName, ColumnMapping] = {
    # The engine's own JSONL layout (Trace field names).
    "default": ColumnMapping(),
    # verl RL parquet: chat prompt, ground truth under reward_model; generations under `response`; GRPO's
    # `uid` when the rollouts were saved with it.
    "verl": ColumnMapping(
        id=None, question="prompt", completion="response", answer="reward_model.ground_truth", group_id="uid"
    ),
    # TRL prompt-completion datasets with a `solution` column (plain or conversational).
    "trl": ColumnMapping(id=None, question="prompt", completion="completion", answer="solution"),
    # The shared GSM8K rollouts (/work/shared/data/gsm8k_rollouts.jsonl); the rollouts of one question
    # share its question_id.
    "gsm8k": ColumnMapping(
        id="id", id_required=True, question="question", completion="completion", group_id="question_id"
    ),
}


def resolve_mapping(
    preset: PresetName = "default",
    *,
    id_col: str | None = None,
    question_col: str | None = None,
    completion_col: str | None = None,
    steps_col: str | None = None,
    answer_col: str | None = None,
    group_col: str | None = None,
    images_col: str | None = None,
) -> ColumnMapping:
    """The preset's mapping with the given columns overriding it (a given id column is required; the
    group column stays optional)."""
    if completion_col is not None and steps_col is not None:
        raise ValueError("give --completion-col or --steps-col, not both")
    base = PRESETS[preset]
    updates: dict[str, object] = {}
    if id_col is not None:
        updates |= {"id": id_col, "id_required": True}
    if question_col is not None:
        updates["question"] = question_col
    if completion_col is not None:
        updates |= {"completion": completion_col, "steps": None}
    if steps_col is not None:
        updates |= {"steps": steps_col, "completion": None}
    if answer_col is not None:
        updates["answer"] = answer_col
    if group_col is not None:
        updates["group_id"] = group_col
    if images_col is not None:
        updates["images"] = images_col
    return ColumnMapping.model_validate(base.model_dump() | updates)


def lookup(record: dict[str, Any], column: str) -> Any:
    """A row's value for ``column`` (a name or a dotted struct path); None when absent."""
    if column in record:
        return record[column]
    value: Any = record
    for name in column.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value
