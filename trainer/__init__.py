"""Trainer-side optimisation over the reward service: the method's advantages and SFT term, per trainer.

A layer above ``client`` and ``mig`` (import-linter keeps everything below from importing it):
:mod:`~mig_annotator.trainer.advantages` is the one definition of the decoupled process/outcome
advantages and the SFT gate (numpy and schemas only); the trainer integrations (``trl``, ``verl_*``)
import their trainer library, torch and the engine lazily, so importing this package costs nothing.
"""

from mig_annotator.trainer.advantages import (
    AdvantageSettings,
    CompletionCredit,
    credit_from_annotation,
    group_token_advantages,
    sft_gate,
    unscored,
)

__all__ = [
    "AdvantageSettings",
    "CompletionCredit",
    "credit_from_annotation",
    "group_token_advantages",
    "sft_gate",
    "unscored",
]
