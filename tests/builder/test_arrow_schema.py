"""The Arrow schema agrees with the pydantic models it is derived from."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mig_annotator.schemas import CharSpan, StepScore, TraceAnnotation
from mig_annotator.schemas.arrow import (
    ANNOTATION_SCHEMA,
    DATASET_ROW_SCHEMA,
    REJECT_SCHEMA,
    TOKEN_COLUMNS_SCHEMA,
    DatasetRow,
    RejectRow,
    TokenColumns,
    arrow_type,
    dataset_schema,
    model_schema,
)

SPAN = pa.struct([pa.field("start", pa.int64(), nullable=False), pa.field("end", pa.int64(), nullable=False)])


def sample_annotation() -> TraceAnnotation:
    return TraceAnnotation(
        trace_id="t-1",
        completion="a = 1\nb = 2\nA: 3",
        v0=-2.5,
        steps=[
            StepScore(
                index=1,
                text="a = 1",
                span=CharSpan(start=0, end=5),
                v=-2.0,
                mig=0.5,
                watermark=-2.0,
                reward=0.5,
            ),
            StepScore(
                index=2,
                text="b = 2",
                span=CharSpan(start=6, end=11),
                v=-2.2,
                mig=-0.2,
                watermark=-2.0,
                reward=0.0,
            ),
        ],
        steps_total=2,
        truncated=False,
        cot_span=CharSpan(start=0, end=12),
        answer="3",
        answer_span=CharSpan(start=15, end=16),
        answer_part_span=CharSpan(start=12, end=16),
        outcome=1,
        process_reward=0.5,
        max_reward=0.5,
        sft_gate=True,
        probe_model="probe",
        probe_identity="fake:probe:float64:0123456789abcdef",
        config_hash="0123456789abcdef",
        tokens_forwarded=40,
        answer_tokens=1,
    )


def test_annotation_schema_has_every_model_field_in_order_with_its_type() -> None:
    assert ANNOTATION_SCHEMA.names == list(TraceAnnotation.model_fields)
    steps_type = ANNOTATION_SCHEMA.field("steps").type
    assert steps_type.value_type == pa.struct(
        [
            pa.field("index", pa.int64(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("span", SPAN, nullable=False),
            pa.field("v", pa.float64(), nullable=False),
            pa.field("mig", pa.float64(), nullable=False),
            pa.field("watermark", pa.float64(), nullable=False),
            pa.field("reward", pa.float64(), nullable=False),
        ]
    )
    expected = {
        "trace_id": (pa.string(), False),
        "v0": (pa.float64(), False),
        "cot_span": (SPAN, False),
        "answer": (pa.string(), True),
        "answer_span": (SPAN, True),
        "answer_part_span": (SPAN, True),
        "outcome": (pa.int64(), False),
        "sft_gate": (pa.bool_(), False),
        "tokens_forwarded": (pa.int64(), False),
    }
    for name, (data_type, nullable) in expected.items():
        field = ANNOTATION_SCHEMA.field(name)
        assert (field.type, field.nullable) == (data_type, nullable), name


def test_dataset_row_schema_is_the_annotation_schema_plus_the_row_fields() -> None:
    assert DATASET_ROW_SCHEMA.names[: len(ANNOTATION_SCHEMA)] == ANNOTATION_SCHEMA.names
    assert DATASET_ROW_SCHEMA.names[len(ANNOTATION_SCHEMA) :] == [
        "question",
        "reference_answer",
        "source_file",
        "source_row",
        "question_images",
    ]
    for field in ANNOTATION_SCHEMA:
        assert DATASET_ROW_SCHEMA.field(field.name).equals(field)
    assert set(DATASET_ROW_SCHEMA.names) == set(DatasetRow.model_fields)
    assert TOKEN_COLUMNS_SCHEMA.names == list(TokenColumns.model_fields)
    assert TOKEN_COLUMNS_SCHEMA.field("cot_mask").type.value_type == pa.bool_()
    assert REJECT_SCHEMA.names == list(RejectRow.model_fields)
    assert REJECT_SCHEMA.field("stage").type == pa.string()


def test_an_annotation_round_trips_through_parquet_unchanged() -> None:
    annotation = sample_annotation()
    row = annotation.model_dump() | {
        "question": "q?",
        "reference_answer": "3",
        "source_file": "in.jsonl",
        "source_row": 7,
    }
    table = pa.Table.from_pylist([row], schema=DATASET_ROW_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    read = pq.read_table(buffer).to_pylist()[0]
    restored = DatasetRow.model_validate(read)
    assert (
        TraceAnnotation.model_validate(restored.model_dump(include=set(TraceAnnotation.model_fields)))
        == annotation
    )
    assert restored.source_row == 7


def test_kept_columns_follow_the_dataset_columns_and_may_not_clash() -> None:
    kept = pa.schema([pa.field("generator", pa.string())])
    schema = dataset_schema(token_columns=True, kept=kept)
    assert schema.names[-6:] == [
        "completion_token_ids",
        "token_rewards",
        "cot_mask",
        "answer_mask",
        "completion_mask",
        "generator",
    ]
    with pytest.raises(ValueError, match="outcome"):
        dataset_schema(token_columns=False, kept=pa.schema([pa.field("outcome", pa.string())]))


def test_unsupported_annotations_are_refused() -> None:
    with pytest.raises(TypeError):
        arrow_type(dict[str, int])
    with pytest.raises(TypeError):
        arrow_type(int | str)
    assert model_schema(CharSpan) == pa.schema(list(SPAN))
