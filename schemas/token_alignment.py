"""Where an annotation's rewards land on a policy tokenizer's tokens: the one rule every trainer output uses.

The builder's token columns and the verl reward manager both call :func:`align_annotation`; nothing else
places rewards on tokens. Its inputs are a :class:`TraceAnnotation` and, for each policy token of the
completion, the half-open character range ``[start, end)`` the token covers in ``annotation.completion``
(a tokenizer's offset mapping; :func:`token_offsets` derives one for arbitrary token ids). A token with
``end > start`` *covers text*; a zero-width token (a special token such as EOS) covers none.

The rule:

* **Step rewards**: r_k sits on the last covering token that overlaps step k's span; rewards add up when
  several steps end in one token. A step that no covering token overlaps (an empty span) puts r_k on the
  last covering token that starts before the step's end (else the first covering token), so the step
  rewards always sum to ``process_reward`` when any token covers text. That token is where step k
  *ends* (``step_end_tokens[k]``; -1 when no token covers text).
* **Outcome**: on the last covering token that overlaps the extracted answer (``answer_span``); with no
  answer, the last one overlapping the answer part (``answer_part_span``); otherwise the last covering
  token.
* **Masks** (covering tokens only): ``completion_mask`` every covering token (for an outcome applied to
  the whole completion); ``answer_mask`` the tokens overlapping the answer part (where the outcome
  applies); ``cot_mask`` the tokens overlapping the chain-of-thought span and not in ``answer_mask``
  (where process rewards apply). ``cot_mask`` and ``answer_mask`` never both hold; both imply
  ``completion_mask``.

Only numpy: the client package uses this without the engine's dependencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mig_annotator.schemas.annotation import CharSpan, TraceAnnotation

__all__ = ["TokenAlignment", "align_annotation", "offsets_problem", "placed_rewards", "token_offsets"]


@dataclass(frozen=True, slots=True)
class TokenAlignment:
    """Per-token rewards and masks of one annotation; every array but ``step_end_tokens`` has one entry per
    policy token."""

    step_rewards: np.ndarray  # float64: the r_k placed by the step rule, 0.0 elsewhere
    outcome_index: int | None  # the token the outcome sits on; None when no token covers text
    completion_mask: np.ndarray  # bool
    cot_mask: np.ndarray  # bool
    answer_mask: np.ndarray  # bool
    step_end_tokens: np.ndarray  # int64, one entry per step (not per token): where r_k sits, -1 when nowhere

    def rewards(
        self, outcome: float, *, process_weight: float = 1.0, outcome_weight: float = 1.0
    ) -> np.ndarray:
        """``process_weight * step_rewards`` plus ``outcome_weight * outcome`` on the outcome token."""
        dense = process_weight * self.step_rewards
        if self.outcome_index is not None:
            dense[self.outcome_index] += outcome_weight * outcome
        return dense


def align_annotation(
    annotation: TraceAnnotation, offsets: Sequence[tuple[int, int]] | np.ndarray
) -> TokenAlignment:
    """Apply the module's rule to one annotation, given its completion's per-token character offsets.

    Raises ValueError naming the token when an offset is not a ``(start, end)`` pair with
    ``0 <= start <= end <= len(annotation.completion)``.
    """
    spans = _checked_offsets(offsets, len(annotation.completion), annotation.trace_id)
    starts, ends = spans[:, 0], spans[:, 1]
    covering = ends > starts
    covering_positions = np.flatnonzero(covering)

    def overlapping(span: CharSpan) -> np.ndarray:
        return covering & (starts < span.end) & (ends > span.start)

    step_rewards = np.zeros(len(spans), dtype=np.float64)
    step_end_tokens = np.full(len(annotation.steps), -1, dtype=np.int64)
    if covering_positions.size:
        for k, step in enumerate(annotation.steps):
            hits = np.flatnonzero(overlapping(step.span))
            if hits.size == 0:
                before = covering_positions[starts[covering_positions] < step.span.end]
                hits = before if before.size else covering_positions[:1]
            step_rewards[hits[-1]] += step.reward
            step_end_tokens[k] = hits[-1]

    answer_mask = (
        overlapping(annotation.answer_part_span)
        if annotation.answer_part_span is not None
        else np.zeros(len(spans), dtype=bool)
    )
    cot_mask = overlapping(annotation.cot_span) & ~answer_mask
    return TokenAlignment(
        step_rewards=step_rewards,
        outcome_index=_outcome_index(annotation, overlapping, covering_positions),
        completion_mask=covering.copy(),
        cot_mask=cot_mask,
        answer_mask=answer_mask,
        step_end_tokens=step_end_tokens,
    )


def placed_rewards(
    annotation: TraceAnnotation,
    offsets: Sequence[tuple[int, int]] | np.ndarray,
    *,
    process_weight: float = 1.0,
    outcome_weight: float = 1.0,
) -> tuple[TokenAlignment, np.ndarray]:
    """The alignment and the per-token rewards every trainer output uses: ``process_weight * r_k`` on the
    last token of step k plus ``outcome_weight * outcome`` on the last answer token (float64)."""
    alignment = align_annotation(annotation, offsets)
    rewards = alignment.rewards(
        annotation.outcome, process_weight=process_weight, outcome_weight=outcome_weight
    )
    return alignment, rewards


def offsets_problem(offsets: Sequence[Sequence[int]], text_length: int) -> tuple[int, str] | None:
    """Why ``offsets`` are not a policy tokenizer's offsets into a completion of ``text_length`` characters:
    ``(token index, reason)`` for the first bad token, or None. Each must be a pair ``0 <= start <= end <=
    text_length``, and starts and ends must never decrease from one token to the next (tokens follow the
    text; several tokens may share a character, as byte-level pieces of one character do)."""
    previous_start = previous_end = 0
    for index, pair in enumerate(offsets):
        if len(pair) != 2:
            return index, f"{list(pair)} is not a [start, end] pair"
        start, end = int(pair[0]), int(pair[1])
        if start < 0 or end < start:
            return index, f"[{start}, {end}] is not a range: need 0 <= start <= end"
        if end > text_length:
            return index, f"[{start}, {end}] ends past the completion's {text_length} characters"
        if start < previous_start or end < previous_end:
            return index, (
                f"[{start}, {end}] goes back from the previous token's [{previous_start}, {previous_end}]: "
                "offsets must not decrease"
            )
        previous_start, previous_end = start, end
    return None


def _outcome_index(
    annotation: TraceAnnotation, overlapping: Any, covering_positions: np.ndarray
) -> int | None:
    for span in (annotation.answer_span, annotation.answer_part_span):
        if span is not None:
            hits = np.flatnonzero(overlapping(span))
            if hits.size:
                return int(hits[-1])
    return int(covering_positions[-1]) if covering_positions.size else None


def _checked_offsets(
    offsets: Sequence[tuple[int, int]] | np.ndarray, text_length: int, trace_id: str
) -> np.ndarray:
    spans = np.asarray(offsets, dtype=np.int64)
    if spans.size == 0:
        return spans.reshape(0, 2)
    if spans.ndim != 2 or spans.shape[1] != 2:
        raise ValueError(
            f"trace {trace_id!r}: token offsets must be (start, end) pairs, got shape {spans.shape}"
        )
    bad = np.flatnonzero((spans[:, 0] < 0) | (spans[:, 1] < spans[:, 0]) | (spans[:, 1] > text_length))
    if bad.size:
        token = int(bad[0])
        raise ValueError(
            f"trace {trace_id!r}: token {token} has offsets {tuple(spans[token].tolist())}, outside "
            f"0 <= start <= end <= {text_length} (the completion's length)"
        )
    return spans


# Incremental decoding: at most this many already-read tokens are decoded again with each new token (so a
# tokenizer that drops the first token's leading space, or merges bytes across tokens, decodes in context).
_LOOK_BACK = 6
# A run of tokens that keeps ending inside a character is cut after this many (invalid bytes: stays linear).
_MAX_PENDING = 16
_INCOMPLETE = "\ufffd"


def _decoded_lengths(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """``len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True))`` for every ``i``, in linear time.

    Incremental detokenisation: the text up to ``read`` is fixed; each new token is decoded together with
    up to :data:`_LOOK_BACK` tokens before ``read`` and the decoded look-back is subtracted. ``read`` moves
    on when the new text does not end inside a character (a U+FFFD replacement), so multi-byte characters
    split over tokens and merged byte-fallback pieces are decoded whole. Each step decodes a bounded window.
    """
    lengths: list[int] = []
    read = 0  # ids[:read] are decoded for good; their text is ``read_length`` characters long
    read_length = 0
    window_start = 0
    window_text_length = 0  # len(decode(ids[window_start:read]))
    for index in range(len(ids)):
        window = list(ids[window_start : index + 1])
        decoded = tokenizer.decode(window, skip_special_tokens=True)
        length = read_length + len(decoded) - window_text_length
        lengths.append(length)
        if decoded.endswith(_INCOMPLETE) and index + 1 - read < _MAX_PENDING:
            continue
        read, read_length = index + 1, length
        window_start = max(0, read - _LOOK_BACK)
        window_text_length = len(tokenizer.decode(list(ids[window_start:read]), skip_special_tokens=True))
    return lengths


def token_offsets(tokenizer: Any, token_ids: Sequence[int], text: str) -> np.ndarray:
    """The ``(start, end)`` character range in ``text`` of each of ``token_ids``, shape ``(n, 2)``.

    ``text`` is ``tokenizer.decode(token_ids, skip_special_tokens=True)`` (as a trainer sends it for
    annotation). When re-tokenising ``text`` with offsets gives the same ids (the usual case) its offset
    mapping is used; otherwise each token ends where the decoded prefix up to it ends and starts where the
    previous token ended (the prefixes' lengths come from incremental decoding, linear in the tokens:
    :func:`_decoded_lengths`). Special tokens are zero-width, placed where the text before them ends.
    ``tokenizer`` is any Hugging Face-style tokenizer (``__call__`` with ``return_offsets_mapping``,
    ``decode``, ``all_special_ids``); nothing here imports transformers.
    """
    special = set(getattr(tokenizer, "all_special_ids", ()))
    plain = [position for position, token in enumerate(token_ids) if token not in special]
    plain_ids = [token_ids[position] for position in plain]
    spans = np.zeros((len(token_ids), 2), dtype=np.int64)
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        same = list(encoded["input_ids"]) == plain_ids
    except (NotImplementedError, ValueError, TypeError, KeyError):
        same = False
    if same:
        for position, (start, end) in zip(plain, encoded["offset_mapping"], strict=True):
            spans[position] = (start, end)
    else:
        previous_end = 0
        for position, prefix_length in zip(plain, _decoded_lengths(tokenizer, plain_ids), strict=True):
            end = max(previous_end, min(prefix_length, len(text)))
            spans[position] = (previous_end, end)
            previous_end = end
    plain_positions = set(plain)
    running_end = 0
    for position in range(len(token_ids)):
        if position not in plain_positions:
            spans[position] = (running_end, running_end)
        running_end = max(running_end, int(spans[position, 1]))
    return spans
