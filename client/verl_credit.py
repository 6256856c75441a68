"""The MIG credit record: how one sample's per-step credit rides in verl's ``rm_scores`` row.

Why a record in ``rm_scores``: verl 0.9.1 hands an advantage estimator only ``token_level_rewards`` (which is
``rm_scores`` when ``algorithm.use_kl_in_reward`` is false), ``response_mask``, the group ``index`` (``uid``)
and the algorithm config (``verl.trainer.ppo.ray_trainer.compute_advantage``); the v1 trainer
(``trainer.use_v1``, the default) even fetches only those fields from its transfer queue. The reward
extra info never reaches the estimator, so everything the decoupled advantages need is written into the
sample's own ``rm_scores`` row, over its valid response tokens (``n`` slots: the v1 trainer keeps only
those), as float32 values that are exact (integers below 2**23, and the rewards as float32):

====================  ===========================================================================
slot                  value
====================  ===========================================================================
0                     :data:`MAGIC` (marks the row as a record)
1                     status: 0 scored, 1 not scored (service failure, outage, no text), 2 scored but
                      too short to hold its record (treated as not scored)
2                     the outcome
3                     m, the number of steps
4                     n, the number of valid response tokens
5 .. 5+m-1            the step rewards r_1 .. r_m (unweighted)
5+m .. 5+2m-1         the token each step ends on (:mod:`mig_annotator.schemas.token_alignment`)
next ceil(n/23)       ``completion_mask``, 23 tokens per slot (bit j of slot w is token 23*w + j)
next ceil(n/23)       ``cot_mask``, the same packing
rest                  0
====================  ===========================================================================

A row shorter than :data:`HEADER` slots holds only what fits of the header and decodes as not scored.
Pure numpy (the client stays free of torch): the manager encodes, the trainer's estimator decodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mig_annotator.schemas.credit import CompletionCredit

__all__ = ["HEADER", "MAGIC", "CreditRecord", "decode_credit", "encode_credit", "record_size"]

MAGIC = 7_340_033.0
HEADER = 5
BITS = 23
SCORED, NOT_SCORED, TOO_SHORT = 0, 1, 2


@dataclass(frozen=True, slots=True)
class CreditRecord(CompletionCredit):
    """One sample's credit as the estimator reads it back (``outcome`` None: not scored), with the
    record's status; it is the :class:`~mig_annotator.schemas.credit.CompletionCredit` the advantages take."""

    status: int


def record_size(steps: int, tokens: int) -> int:
    """Slots a scored record of ``steps`` steps over ``tokens`` tokens needs."""
    words = -(-tokens // BITS)
    return HEADER + 2 * steps + 2 * words


def _pack(mask: np.ndarray) -> np.ndarray:
    words = np.zeros(-(-len(mask) // BITS), dtype=np.int64)
    for position in np.flatnonzero(mask):
        words[position // BITS] |= 1 << (position % BITS)
    return words


def _unpack(words: np.ndarray, tokens: int) -> np.ndarray:
    positions = np.arange(tokens)
    return ((words.astype(np.int64)[positions // BITS] >> (positions % BITS)) & 1).astype(bool)


def encode_credit(
    tokens: int,
    *,
    outcome: float | None = None,
    step_rewards: np.ndarray | None = None,
    step_end_tokens: np.ndarray | None = None,
    cot_mask: np.ndarray | None = None,
    completion_mask: np.ndarray | None = None,
) -> np.ndarray:
    """The record of one sample (float32, ``tokens`` slots). ``outcome`` None: a sample not scored."""
    row = np.zeros(tokens, dtype=np.float32)
    if outcome is None or step_rewards is None or step_end_tokens is None:
        header = [MAGIC, NOT_SCORED, 0.0, 0.0, float(tokens)]
    elif cot_mask is None or completion_mask is None:
        raise ValueError("encode_credit: a scored sample needs cot_mask and completion_mask")
    elif len(step_rewards) != len(step_end_tokens):
        raise ValueError(
            f"encode_credit: {len(step_rewards)} step rewards but {len(step_end_tokens)} step-end tokens"
        )
    elif record_size(len(step_rewards), tokens) > tokens:
        header = [MAGIC, TOO_SHORT, float(outcome), float(len(step_rewards)), float(tokens)]
    else:
        for mask, name in ((cot_mask, "cot_mask"), (completion_mask, "completion_mask")):
            if len(mask) != tokens:
                raise ValueError(f"encode_credit: {name} has {len(mask)} entries for {tokens} tokens")
        ends = np.asarray(step_end_tokens, dtype=np.int64)
        if ends.size and (ends.min() < 0 or ends.max() >= tokens):
            raise ValueError(f"encode_credit: a step ends outside the {tokens} tokens: {ends.tolist()}")
        body = np.concatenate(
            [
                [MAGIC, SCORED, float(outcome), float(len(ends)), float(tokens)],
                np.asarray(step_rewards, dtype=np.float64),
                ends.astype(np.float64),
                _pack(np.asarray(completion_mask, dtype=bool)).astype(np.float64),
                _pack(np.asarray(cot_mask, dtype=bool)).astype(np.float64),
            ]
        )
        row[: len(body)] = body
        return row
    row[: min(tokens, HEADER)] = np.asarray(header[: min(tokens, HEADER)], dtype=np.float32)
    return row


def decode_credit(row: np.ndarray, tokens: int, *, where: str = "rm_scores row") -> CreditRecord:
    """Read a record back from the first ``tokens`` slots of ``row``.

    Raises ValueError naming ``where`` when the row is not a record (another reward manager's scores)."""
    values = np.asarray(row, dtype=np.float64)[:tokens]
    if tokens == 0 or values[0] != MAGIC:
        raise ValueError(
            f"{where} is not a MIG credit record: the mig_decoupled estimator needs the rewards of "
            "MigRewardLoopManager (mig_annotator.client.verl_reward_loop) and "
            "algorithm.use_kl_in_reward=false"
        )
    empty = np.zeros(tokens, dtype=bool)
    if tokens < HEADER or int(values[1]) != SCORED:
        status = int(values[1]) if tokens > 1 else NOT_SCORED
        return CreditRecord(None, np.zeros(0), np.zeros(0, dtype=np.int64), empty, empty.copy(), status)
    if int(values[4]) != tokens:
        raise ValueError(f"{where}: the record is for {int(values[4])} tokens, the response has {tokens}")
    steps = int(values[3])
    words = -(-tokens // BITS)
    start = HEADER + 2 * steps
    return CreditRecord(
        outcome=float(values[2]),
        step_rewards=values[HEADER : HEADER + steps].copy(),
        step_end_tokens=values[HEADER + steps : start].astype(np.int64),
        completion_mask=_unpack(values[start : start + words], tokens),
        cot_mask=_unpack(values[start + words : start + 2 * words], tokens),
        status=SCORED,
    )
