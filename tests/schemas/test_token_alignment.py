"""The one token-alignment rule, on the SmolLM2 policy tokenizer with exact token positions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import AutoTokenizer

from mig_annotator.schemas import CharSpan, StepScore, TraceAnnotation
from mig_annotator.schemas.token_alignment import align_annotation, token_offsets

POLICY_TOKENIZER = Path(__file__).resolve().parents[2] / "bench" / "assets" / "smollm2-tokenizer"

#            0         1         2         3         4
#            01234567890123456789012345678901234567890123456
COMPLETION = "Sam has 3 apples.\nHe buys 2, so 3 + 2 = 5.\nA: 5"
# SmolLM2 tokens: 0 'Sam' 1 ' has' 2 ' ' 3 '3' 4 ' apples' 5 '.' 6 '\n' 7 'He' 8 ' buys' 9 ' ' 10 '2' 11 ','
# 12 ' so' 13 ' ' 14 '3' 15 ' +' 16 ' ' 17 '2' 18 ' =' 19 ' ' 20 '5' 21 '.' 22 '\n'
# 23 'A' 24 ':' 25 ' ' 26 '5'


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(POLICY_TOKENIZER, local_files_only=True)


def annotation(
    steps: list[tuple[int, int, float]],
    *,
    completion: str = COMPLETION,
    cot: tuple[int, int] = (0, 42),
    part: tuple[int, int] | None = (43, 47),
    answer: tuple[int, int] | None = (46, 47),
    outcome: int = 1,
) -> TraceAnnotation:
    return TraceAnnotation(
        trace_id="t1",
        completion=completion,
        v0=-2.0,
        steps=[
            StepScore(
                index=k + 1,
                text=completion[a:b],
                span=CharSpan(start=a, end=b),
                v=-1.0,
                mig=r,
                watermark=-1.0,
                reward=r,
            )
            for k, (a, b, r) in enumerate(steps)
        ],
        steps_total=len(steps),
        truncated=False,
        cot_span=CharSpan(start=cot[0], end=cot[1]),
        answer=completion[answer[0] : answer[1]] if answer else None,
        answer_span=CharSpan(start=answer[0], end=answer[1]) if answer else None,
        answer_part_span=CharSpan(start=part[0], end=part[1]) if part else None,
        outcome=outcome,
        process_reward=sum(r for _, _, r in steps),
        max_reward=max((r for _, _, r in steps), default=0.0),
        sft_gate=False,
        probe_model="p",
        probe_identity="fake:p:float64:0123456789abcdef",
        config_hash="h",
        tokens_forwarded=1,
        answer_tokens=1,
    )


def offsets_of(tokenizer: Any, text: str = COMPLETION) -> list[tuple[int, int]]:
    return tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]


def test_step_rewards_sit_on_each_steps_last_token_and_the_outcome_on_the_answers(tokenizer: Any) -> None:
    aligned = align_annotation(annotation([(0, 17, 0.5), (18, 42, 0.25)]), offsets_of(tokenizer))
    assert len(aligned.step_rewards) == 27
    assert np.flatnonzero(aligned.step_rewards).tolist() == [5, 21]  # the two '.' tokens
    assert aligned.step_end_tokens.tolist() == [5, 21]  # where each step ends: where its r_k sits
    assert aligned.step_rewards[[5, 21]].tolist() == [0.5, 0.25]
    assert aligned.outcome_index == 26  # the '5' after "A: "
    assert np.flatnonzero(aligned.cot_mask).tolist() == list(range(22))  # '\n' at 42 is outside cot_span
    assert np.flatnonzero(aligned.answer_mask).tolist() == [23, 24, 25, 26]
    assert aligned.completion_mask.all()
    dense = aligned.rewards(1.0, process_weight=2.0, outcome_weight=3.0)
    assert np.flatnonzero(dense).tolist() == [5, 21, 26]
    assert dense[[5, 21, 26]].tolist() == [1.0, 0.5, 3.0]


def test_a_step_ending_inside_a_token_puts_its_reward_on_that_token(tokenizer: Any) -> None:
    # step 1 ends inside ' apples' (chars 9..16), step 2 inside ' buys' (20..25): both share no token
    aligned = align_annotation(annotation([(0, 12, 0.5), (12, 22, 0.25)]), offsets_of(tokenizer))
    assert np.flatnonzero(aligned.step_rewards).tolist() == [4, 8]
    # two steps ending in one token add up there
    shared = align_annotation(annotation([(0, 11, 0.5), (11, 13, 0.25)]), offsets_of(tokenizer))
    assert np.flatnonzero(shared.step_rewards).tolist() == [4] and shared.step_rewards[4] == 0.75


def test_without_an_answer_the_outcome_takes_the_answer_part_then_the_last_token(tokenizer: Any) -> None:
    offsets = offsets_of(tokenizer)
    assert align_annotation(annotation([], answer=None), offsets).outcome_index == 26
    no_part = align_annotation(annotation([], answer=None, part=None, cot=(0, 47)), offsets)
    assert no_part.outcome_index == 26
    assert not no_part.answer_mask.any() and no_part.cot_mask.all()


def test_zero_width_tokens_are_in_no_mask_and_get_no_reward(tokenizer: Any) -> None:
    offsets = [*offsets_of(tokenizer), (47, 47)]  # an EOS after the text
    aligned = align_annotation(annotation([(0, 17, 0.5), (18, 47, 0.25)]), offsets)
    assert aligned.step_rewards[27] == 0.0 and aligned.step_rewards[26] == 0.25
    assert not (aligned.completion_mask[27] or aligned.cot_mask[27] or aligned.answer_mask[27])
    assert aligned.outcome_index == 26


def test_an_empty_step_keeps_its_reward_so_rewards_sum_to_the_process_reward(tokenizer: Any) -> None:
    steps = [(0, 17, 0.5), (17, 17, 0.125), (18, 42, 0.25)]
    aligned = align_annotation(annotation(steps), offsets_of(tokenizer))
    assert aligned.step_rewards[5] == 0.625  # the empty step at 17 joins the token before it
    assert aligned.step_rewards.sum() == pytest.approx(0.875)


def test_no_covering_token_means_no_outcome_token_and_no_rewards() -> None:
    aligned = align_annotation(annotation([(0, 17, 0.5)]), [(0, 0), (0, 0)])
    assert aligned.outcome_index is None
    assert aligned.rewards(1.0).tolist() == [0.0, 0.0]
    assert align_annotation(annotation([(0, 17, 0.5)]), []).step_rewards.shape == (0,)


def test_offsets_outside_the_completion_are_refused_naming_the_token() -> None:
    with pytest.raises(ValueError, match=r"trace 't1': token 1 has offsets \(40, 48\)"):
        align_annotation(annotation([]), [(0, 3), (40, 48)])
    with pytest.raises(ValueError, match="token 0 has offsets"):
        align_annotation(annotation([]), [(5, 4)])


def test_token_offsets_of_sampled_ids_match_the_tokenizers_mapping_with_special_tokens_zero_width(
    tokenizer: Any,
) -> None:
    ids = [*tokenizer(COMPLETION, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    spans = token_offsets(tokenizer, ids, COMPLETION)
    assert spans.shape == (28, 2)
    assert spans[:27].tolist() == [list(pair) for pair in offsets_of(tokenizer)]
    assert spans[27].tolist() == [47, 47]


def test_token_offsets_fall_back_to_prefix_decoding_when_retokenising_differs(tokenizer: Any) -> None:
    text = "Sam has 3 apples; 3 + 2 = 5 → done. Ünïcödé ✓"
    ids = [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    fast = token_offsets(tokenizer, ids, text)
    slow = token_offsets(tokenizer, ids, text + " ")  # re-tokenising gives other ids: prefix decoding
    assert slow[-1].tolist() == [len(text), len(text)] == fast[-1].tolist()
    assert (np.diff(slow[:, 1]) >= 0).all() and (slow[:, 0] <= slow[:, 1]).all()
    ascii_ids = ids[:15]  # up to "done." every token decodes to whole characters: both paths agree
    ascii_text = tokenizer.decode(ascii_ids)
    assert token_offsets(tokenizer, ascii_ids, ascii_text + "!")[:, 1].tolist() == [
        end for _, end in offsets_of(tokenizer, ascii_text)
    ]


def prefix_decoding_offsets(tokenizer: Any, token_ids: list[int], text: str) -> list[list[int]]:
    """The quadratic reference the linear fallback replaced: decode every prefix of the plain ids."""
    special = set(tokenizer.all_special_ids)
    spans, previous_end = [], 0
    for position, token in enumerate(token_ids):
        if token in special:
            spans.append([previous_end, previous_end])
            continue
        prefix = tokenizer.decode(token_ids[: position + 1], skip_special_tokens=True)
        end = max(previous_end, min(len(prefix), len(text)))
        spans.append([previous_end, end])
        previous_end = end
    return spans


class CountingTokenizer:
    """The real tokenizer, counting how many token ids ``decode`` is given in all."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.decoded_tokens = tokenizer, 0
        self.all_special_ids = tokenizer.all_special_ids

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer(*args, **kwargs)

    def decode(self, ids: list[int], **kwargs: Any) -> str:
        self.decoded_tokens += len(ids)
        return self.tokenizer.decode(ids, **kwargs)


def unmerged_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids a policy could sample that re-tokenising never gives back: each character encoded alone (a
    multi-byte character becomes its byte-level pieces)."""
    return [token for char in text for token in tokenizer(char, add_special_tokens=False)["input_ids"]]


MIXED_TEXT = "Sam has 3 apples; 3 + 2 = 5 → done. Ünïcödé ✓ 😀 中文。 👩‍👩‍👧 ﬁ don't . , ?"


def test_prefix_lengths_by_incremental_decoding_equal_decoding_every_prefix(tokenizer: Any) -> None:
    """The linear fallback gives the quadratic prefix-decoding offsets exactly, on ids whose
    re-tokenisation differs: unmerged characters (byte-level pieces of non-ASCII characters), random vocab
    ids (invalid UTF-8 byte runs) and special tokens in between."""
    ids = [*unmerged_ids(tokenizer, MIXED_TEXT), tokenizer.eos_token_id]
    assert tokenizer(MIXED_TEXT, add_special_tokens=False)["input_ids"] != ids[:-1]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert token_offsets(tokenizer, ids, text).tolist() == prefix_decoding_offsets(tokenizer, ids, text)
    rng = np.random.default_rng(21)
    for _ in range(40):
        size = int(rng.integers(1, 50))
        sampled = [int(token) for token in rng.integers(0, tokenizer.vocab_size, size=size)]
        sampled.insert(len(sampled) // 2, tokenizer.eos_token_id)
        text = tokenizer.decode(sampled, skip_special_tokens=True)
        expected = prefix_decoding_offsets(tokenizer, sampled, text)
        assert token_offsets(tokenizer, sampled, text).tolist() == expected, sampled


def test_token_offsets_fallback_decodes_a_bounded_window_per_token(tokenizer: Any) -> None:
    """Prefix decoding handed decode n(n+1)/2 token ids (3,268 ms at 4,000 tokens); now it is linear."""
    ids = unmerged_ids(tokenizer, "The answer is 5 ✓ and then some more. " * 30)
    counting = CountingTokenizer(tokenizer)
    spans = token_offsets(counting, ids, tokenizer.decode(ids))
    assert spans[-1, 1] == len(tokenizer.decode(ids))
    assert counting.decoded_tokens <= 16 * len(ids) < len(ids) * (len(ids) + 1) // 2
