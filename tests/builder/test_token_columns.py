"""Token-level trainer columns, checked against the step spans."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from mig_annotator.builder.token_columns import load_policy_tokenizer, token_columns
from mig_annotator.schemas import CharSpan, StepScore, TraceAnnotation


def test_token_columns_agree_with_the_step_spans_of_every_built_row(
    built_dataset: Path, model_path: Path
) -> None:
    tokenizer = load_policy_tokenizer(model_path)
    frame = pl.read_parquet(sorted(built_dataset.glob("part-*.parquet")))
    rewarded_steps = 0
    for row in frame.iter_rows(named=True):
        completion = row["completion"]
        encoded = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        ids = row["completion_token_ids"]
        assert ids == encoded["input_ids"]
        n = len(ids)
        assert len(row["token_rewards"]) == len(row["cot_mask"]) == len(row["answer_mask"]) == n
        assert row["completion_mask"] == [end > start for start, end in offsets]
        cot = row["cot_span"]
        part = row["answer_part_span"]
        for i, (start, end) in enumerate(offsets):
            in_part = start < part["end"] and end > part["start"]
            assert row["answer_mask"][i] == in_part
            assert row["cot_mask"][i] == (not in_part and start < cot["end"] and end > cot["start"])
            assert not (row["cot_mask"][i] and row["answer_mask"][i])
        expected = [0.0] * n
        for step in row["steps"]:
            span = step["span"]
            covering = [
                i for i, (start, end) in enumerate(offsets) if start < span["end"] and end > span["start"]
            ]
            last = covering[-1]
            assert completion[span["end"] - 1] in completion[offsets[last][0] : offsets[last][1]]
            expected[last] += step["reward"]
            rewarded_steps += step["reward"] > 0
        assert row["token_rewards"] == pytest.approx(expected)
        assert sum(row["token_rewards"]) == pytest.approx(row["process_reward"])
        answer_text = "".join(
            completion[start:end] for (start, end), on in zip(offsets, row["answer_mask"], strict=True) if on
        )
        assert row["answer"] in answer_text and answer_text.strip().startswith("A:")
    assert rewarded_steps > 0


def annotation_with(
    completion: str, steps: list[tuple[int, int, float]], part: tuple[int, int] | None
) -> TraceAnnotation:
    return TraceAnnotation(
        trace_id="t",
        completion=completion,
        v0=-1.0,
        steps=[
            StepScore(
                index=k + 1,
                text=completion[a:b],
                span=CharSpan(start=a, end=b),
                v=-1.0,
                mig=0.0,
                watermark=-1.0,
                reward=r,
            )
            for k, (a, b, r) in enumerate(steps)
        ],
        steps_total=len(steps),
        truncated=False,
        cot_span=CharSpan(start=0, end=part[0] if part else len(completion)),
        answer=None,
        answer_span=None,
        answer_part_span=CharSpan(start=part[0], end=part[1]) if part else None,
        outcome=0,
        process_reward=sum(r for _, _, r in steps),
        max_reward=max((r for _, _, r in steps), default=0.0),
        sft_gate=False,
        probe_model="p",
        probe_identity="fake:p:float64:0123456789abcdef",
        config_hash="h",
        tokens_forwarded=1,
        answer_tokens=1,
    )


def test_rewards_sit_on_each_steps_last_token_and_add_up_when_steps_share_it() -> None:
    #             0123456789012345
    completion = "ab cd\nef gh\nA: 9"
    annotation = annotation_with(completion, [(0, 5, 0.5), (6, 11, 0.25)], (12, 16))
    offsets = [(0, 2), (2, 5), (5, 6), (6, 8), (8, 12), (12, 14), (14, 16), (16, 16)]
    columns = token_columns(annotation, list(range(8)), offsets)
    assert columns.token_rewards == [0.0, 0.5, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0]
    assert columns.cot_mask == [True, True, True, True, True, False, False, False]
    assert columns.answer_mask == [False, False, False, False, False, True, True, False]
    assert columns.completion_mask == [True] * 7 + [False]  # the zero-width token covers no text
    merged = token_columns(annotation, [0, 1], [(0, 8), (8, 16)])
    assert merged.token_rewards == [0.5, 0.25]
    assert merged.answer_mask == [False, True] and merged.cot_mask == [True, False]


def test_without_an_answer_part_every_token_is_chain_of_thought() -> None:
    annotation = annotation_with("one\ntwo", [(0, 3, 0.0), (4, 7, 1.0)], None)
    columns = token_columns(annotation, [1, 2, 3], [(0, 3), (3, 4), (4, 7)])
    assert columns.cot_mask == [True, True, True]
    assert columns.answer_mask == [False, False, False]
    assert columns.token_rewards == [0.0, 0.0, 1.0]
