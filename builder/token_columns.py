"""Token-level trainer columns in the policy's tokenizer: decoupled masking, ready for a reward tensor.

The completion is tokenised with character offsets; rewards and masks follow the one rule of
:mod:`mig_annotator.schemas.token_alignment` (shared with the verl adapter): a step's reward on the last
token that overlaps the step; ``completion_mask`` every token that covers text; ``answer_mask`` tokens
overlapping the final-answer part (where the outcome applies); ``cot_mask`` the other tokens inside the
chain-of-thought span (where process rewards apply).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mig_annotator.builder.errors import BuildError
from mig_annotator.schemas import TraceAnnotation
from mig_annotator.schemas.arrow import TokenColumns
from mig_annotator.schemas.token_alignment import align_annotation


def load_policy_tokenizer(path: Path) -> Any:
    """A fast (offset-reporting) Hugging Face tokenizer from a local folder; nothing is downloaded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    if not path.is_dir():
        raise BuildError(f"--policy-tokenizer {path}: not a folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise BuildError(f"--policy-tokenizer {path}: cannot load a tokenizer there ({error})") from error
    if not getattr(tokenizer, "is_fast", False):
        raise BuildError(
            f"--policy-tokenizer {path}: a fast tokenizer (tokenizer.json) is needed for offsets"
        )
    return tokenizer


class TokenAligner:
    """Computes :class:`TokenColumns` for annotations with one policy tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def columns(self, annotations: Sequence[TraceAnnotation]) -> list[TokenColumns]:
        if not annotations:
            return []
        encoded = self._tokenizer(
            [annotation.completion for annotation in annotations],
            add_special_tokens=False,
            return_offsets_mapping=True,
        )
        return [
            token_columns(annotation, ids, offsets)
            for annotation, ids, offsets in zip(
                annotations, encoded["input_ids"], encoded["offset_mapping"], strict=True
            )
        ]


def token_columns(
    annotation: TraceAnnotation, token_ids: Sequence[int], offsets: Sequence[tuple[int, int]]
) -> TokenColumns:
    """The token columns of one annotation, given its completion's tokens and their character offsets."""
    alignment = align_annotation(annotation, offsets)
    return TokenColumns(
        completion_token_ids=list(token_ids),
        token_rewards=alignment.step_rewards.tolist(),
        cot_mask=alignment.cot_mask.tolist(),
        answer_mask=alignment.answer_mask.tolist(),
        completion_mask=alignment.completion_mask.tolist(),
    )
