"""The Arrow/Parquet schema of every row we write (dataset rows, rejects, the service's audit log), derived
from the pydantic models.

One source of truth: the column types come from the pydantic field annotations
(:class:`schemas.annotation.TraceAnnotation` and the builder row models below), mapped mechanically:
``str`` -> string, ``int`` -> int64, ``float`` -> float64, ``bool`` -> bool, ``datetime`` -> UTC timestamp
(microseconds), ``Literal[str, ...]`` -> string, ``list[X]`` -> list<X>, a nested model -> struct,
``X | None`` -> a nullable column (every other column is non-nullable). A dataset row is a
:class:`DatasetRow` (the annotation plus the question, the reference answer and where the row came from),
optionally followed by the :class:`TokenColumns`, then by the input columns the build keeps.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Any, Literal, Union

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from mig_annotator.schemas.annotation import TraceAnnotation

RejectStage = Literal["mapping", "validation", "prepare", "scoring"]


class QuestionImage(BaseModel):
    """One image of a row's question: which bytes the probe read, and a small PNG of it for the report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(description="sha256 of the image file's bytes the probe read.")
    width: int
    height: int
    thumbnail_png: bytes = Field(description="A PNG of at most 96 x 96 pixels (the report shows it).")


class DatasetRow(TraceAnnotation):
    """One annotated row of a built dataset: the annotation and what a trainer needs to rebuild the sample."""

    question: str = Field(description="The question text the probe read (chat prompts: the user turns).")
    reference_answer: str = Field(description="The gold final answer the probe teacher-forced.")
    source_file: str = Field(description="The input file the row came from.")
    source_row: int = Field(ge=0, description="The row's 0-based record index within source_file.")
    question_images: list[QuestionImage] = Field(
        default_factory=list, description="The question's images, in order (empty for a text question)."
    )


class TokenColumns(BaseModel):
    """Token-level columns in the policy's tokenizer, aligned to ``DatasetRow.completion``.

    Token i covers ``completion[start_i:end_i]`` (the tokenizer's offsets). Placed by the one rule of
    :mod:`mig_annotator.schemas.token_alignment`: a step's reward sits on the last token that overlaps the
    step (rewards add up if two steps end in one token); ``completion_mask`` marks every token that covers
    text (for an outcome applied to the whole completion); ``answer_mask`` the tokens that overlap the
    answer part; ``cot_mask`` the other tokens inside the chain-of-thought span. Zero-width tokens are in
    no mask.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    completion_token_ids: list[int] = Field(description="The completion tokenised by the policy tokenizer.")
    token_rewards: list[float] = Field(description="r_k on the last token of step k, 0.0 elsewhere.")
    cot_mask: list[bool] = Field(description="Chain-of-thought tokens: process rewards apply here.")
    answer_mask: list[bool] = Field(description="Final-answer tokens: the outcome applies here.")
    completion_mask: list[bool] = Field(
        description="Every completion token that covers text: for an outcome applied to the whole completion."
    )


class RejectRow(BaseModel):
    """One input row the build could not annotate, with its reason and where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_file: str
    source_row: int = Field(ge=0)
    trace_id: str | None = Field(description="The row's id when it had one.")
    stage: RejectStage = Field(description="Where it failed: mapping, validation, prepare or scoring.")
    field: str | None = Field(description="The trace field at fault, when one is.")
    reason: str
    row_json: str = Field(description="The input row as JSON, so nothing is lost.")


def arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """The Arrow type of a pydantic field annotation and whether it is nullable."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) != 1:
            raise TypeError(f"no Arrow type for the union {annotation!r}")
        return arrow_type(members[0])[0], True
    if origin is Literal:
        values = typing.get_args(annotation)
        if not all(isinstance(value, str) for value in values):
            raise TypeError(f"only string literals map to Arrow, got {annotation!r}")
        return pa.string(), False
    if origin is list:
        (item,) = typing.get_args(annotation)
        item_type, item_nullable = arrow_type(item)
        return pa.list_(pa.field("element", item_type, nullable=item_nullable)), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(list(model_schema(annotation))), False
    scalars: dict[Any, pa.DataType] = {
        str: pa.string(),
        bytes: pa.binary(),
        bool: pa.bool_(),
        int: pa.int64(),
        float: pa.float64(),
        datetime: pa.timestamp("us", tz="UTC"),
    }
    if annotation in scalars:
        return scalars[annotation], False
    raise TypeError(f"no Arrow type for {annotation!r}")


def model_schema(model: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of a pydantic model: one column per field, in field order."""
    fields = []
    for name, info in model.model_fields.items():
        data_type, nullable = arrow_type(info.annotation)
        fields.append(pa.field(name, data_type, nullable=nullable))
    return pa.schema(fields)


ANNOTATION_SCHEMA = model_schema(TraceAnnotation)
DATASET_ROW_SCHEMA = model_schema(DatasetRow)
TOKEN_COLUMNS_SCHEMA = model_schema(TokenColumns)
REJECT_SCHEMA = model_schema(RejectRow)
RESERVED_COLUMNS = frozenset(DATASET_ROW_SCHEMA.names) | frozenset(TOKEN_COLUMNS_SCHEMA.names)


def dataset_schema(*, token_columns: bool, kept: pa.Schema | None = None) -> pa.Schema:
    """The schema of a built dataset: the row model, the token columns when asked, then kept input columns."""
    fields = list(DATASET_ROW_SCHEMA)
    if token_columns:
        fields.extend(TOKEN_COLUMNS_SCHEMA)
    if kept is not None:
        clashes = sorted(set(kept.names) & {field.name for field in fields})
        if clashes:
            raise ValueError(f"kept input columns clash with dataset columns: {', '.join(clashes)}")
        fields.extend(kept)
    return pa.schema(fields)
