"""GRPO groups: probe sequences that share their question prefix and their continuation.

In a GRPO batch every completion of a question reads the same probe header (question prompt, with any BOS
token) and the same continuation (answer prompt and reference answer), so prefix 0 of every member is the
same token sequence and v_0 is the same number. A backend scores such a group as one unit:

* the header (``trace_ids[:boundaries[0]]``) is forwarded once for the whole group;
* prefix 0 (the header followed by the continuation) is scored once, for the group's first member, and its
  row is copied into every member's result;
* each member's own tokens (its steps) and its prefixes 1..K are scored as before.

Grouping is by token content, never by a caller's label: two sequences are grouped exactly when their
header ids, continuation ids and answer-token counts are equal, so a group shares only what is identical and
the numbers equal scoring the members one by one. Members keep their input order; groups are ordered by
their first member. Sequences whose headers hold images group only when the images' bytes are equal too.

Forwarded-token accounting: the header and the prefix-0 continuation are counted once, on the group's first
member; every member counts its own step tokens and its prefixes 1..K. The sum over a batch is what the
backend forwards at the least (:func:`grouped_minimal_tokens`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mig_annotator.engine.prompt import ProbeSequence


@dataclass(frozen=True, slots=True)
class PrefixGroup:
    """Sequences (by index into the scored list) that share header, continuation and answer length."""

    members: tuple[int, ...]
    header_length: int  # tokens of the shared header: boundaries[0] of every member

    @property
    def first(self) -> int:
        return self.members[0]

    def __len__(self) -> int:
        return len(self.members)


GroupKey = tuple[tuple[int, ...], tuple[int, ...], int, str | None]


def group_key(sequence: ProbeSequence) -> GroupKey:
    """What members of one group have in common: header ids, continuation ids, answer-token count, and the
    header's images by their bytes (equal placeholder ids may stand for other pixels)."""
    vision = sequence.vision.key if sequence.vision is not None else None
    return (
        sequence.trace_ids[: sequence.boundaries[0]],
        sequence.continuation_ids,
        sequence.n_answer_tokens,
        vision,
    )


def group_sequences(sequences: Sequence[ProbeSequence], *, enabled: bool = True) -> list[PrefixGroup]:
    """The groups of ``sequences``, ordered by first member (``enabled=False``: one group per sequence)."""
    if not enabled:
        return [PrefixGroup((index,), sequence.boundaries[0]) for index, sequence in enumerate(sequences)]
    members: dict[GroupKey, list[int]] = {}
    for index, sequence in enumerate(sequences):
        members.setdefault(group_key(sequence), []).append(index)
    return [PrefixGroup(tuple(indices), sequences[indices[0]].boundaries[0]) for indices in members.values()]


def member_minimal_tokens(sequence: ProbeSequence, *, first: bool) -> int:
    """Tokens a group member forwards at the least: its steps and the continuation of prefixes 1..K, plus
    the header and prefix 0's continuation when it is the group's first member."""
    continuation = len(sequence.continuation_ids)
    own = sequence.boundaries[-1] - sequence.boundaries[0] + (sequence.n_prefixes - 1) * continuation
    return own + (sequence.boundaries[0] + continuation if first else 0)


def grouped_minimal_tokens(sequences: Sequence[ProbeSequence], *, enabled: bool = True) -> int:
    """The least any exact method forwards for ``sequences`` when groups share header and prefix 0
    (``enabled=False``: :attr:`ProbeSequence.minimal_tokens` summed)."""
    total = 0
    for group in group_sequences(sequences, enabled=enabled):
        for position, index in enumerate(group.members):
            total += member_minimal_tokens(sequences[index], first=position == 0)
    return total
