"""The signal check: does the SFT probe's v_k rise along correct demonstrations and fall at a wrong step?

Scores held-out demonstrations through the engine's :class:`Annotator` (a ``TransformersProbe`` over the
policy folder, prompt layout :data:`policy.PROBE_TEMPLATE`) and prints:

* along clean demonstrations: mean v_0, mean v_K and the share of demonstrations with v_K > v_0;
* the step AUROC on corrupted demonstrations, score = -mig_k (mig_k = v_k - v_{k-1}): positives are the
  injected wrong steps, negatives the correct steps before them in the same demonstrations (steps after the
  wrong one are locally right but follow from it, so they are left out of the primary figure; a second
  AUROC counts them as negatives too). The answer line (``A: N``) is not a step of the chain and is left out.

    python experiments/mig_vs_grpo/signal_check.py --model outputs/mig_vs_grpo/sft

(Not named ``signal.py``: run as a script, its folder leads ``sys.path`` and would shadow the standard
library's ``signal`` module for torch and subprocess.)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import policy  # the folder is package-free
import task


def auroc(positives: list[float], negatives: list[float]) -> float:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney)."""
    pos, neg = np.asarray(positives, dtype=float), np.asarray(negatives, dtype=float)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("auroc needs at least one positive and one negative")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def _traces(demos: list[task.Demonstration], prefix: str) -> list[Any]:
    from mig_annotator.schemas import Trace

    return [
        Trace(
            id=f"{prefix}-{index}",
            question=demo.problem.question,
            completion=demo.completion,
            reference_answer=str(demo.problem.answer),
        )
        for index, demo in enumerate(demos)
    ]


def _chain_migs(annotation: Any, demo: task.Demonstration) -> list[float]:
    """mig_k of the chain's steps (the answer line dropped), checked against the demonstration's lines."""
    texts = [step.text.strip() for step in annotation.steps]
    if texts[: len(demo.steps)] != list(demo.steps):
        raise AssertionError(f"segmentation differs from one step per line: {texts} vs {demo.steps}")
    return [step.mig for step in annotation.steps[: len(demo.steps)]]


def check(model: Path, n: int = 200, seed: int = 0) -> dict[str, float]:
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe.transformers_probe import TransformersProbe, TransformersProbeSettings
    from mig_annotator.schemas import ScoringConfig
    from mig_annotator.schemas.config import PromptTemplate

    held_out = task.problems("held_out", 2 * n, seed=2000 + seed)
    clean = [task.demonstrate(p) for p in held_out[:n]]
    rng = random.Random(f"signal/{seed}")
    corrupted = [task.corrupt(p, rng) for p in held_out[n:]]
    config = ScoringConfig(prompt=PromptTemplate(**policy.PROBE_TEMPLATE))
    probe = TransformersProbe(TransformersProbeSettings(model=str(model), threads=1))
    with Annotator(probe, config) as annotator:
        clean_notes = annotator.annotate(_traces(clean, "clean"))
        corrupted_notes = annotator.annotate(_traces(corrupted, "corrupted"))

    v0 = [note.v0 for note in clean_notes]
    v_last = [note.steps[len(demo.steps) - 1].v for note, demo in zip(clean_notes, clean, strict=True)]
    wrong, before, after = [], [], []
    for note, demo in zip(corrupted_notes, corrupted, strict=True):
        migs = _chain_migs(note, demo)
        assert demo.wrong_step is not None
        wrong.append(-migs[demo.wrong_step])
        before.extend(-m for m in migs[: demo.wrong_step])
        after.extend(-m for m in migs[demo.wrong_step + 1 :])
    clean_steps = [-m for note, demo in zip(clean_notes, clean, strict=True) for m in _chain_migs(note, demo)]
    return {
        "clean_mean_v0": float(np.mean(v0)),
        "clean_mean_vK": float(np.mean(v_last)),
        "clean_share_vK_above_v0": float(np.mean(np.asarray(v_last) > np.asarray(v0))),
        "clean_mean_mig": float(-np.mean(clean_steps)),
        "wrong_step_mean_mig": float(-np.mean(wrong)),
        "step_auroc_vs_steps_before": auroc(wrong, before),
        "step_auroc_vs_before_and_after": auroc(wrong, before + after),
        "step_auroc_vs_clean_steps": auroc(wrong, clean_steps),
        "n_clean": len(clean),
        "n_corrupted": len(corrupted),
        "n_negatives_before": len(before),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("outputs/mig_vs_grpo/sft"))
    parser.add_argument("--n", type=int, default=200, help="clean and corrupted held-out demonstrations each")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print(json.dumps(check(args.model, args.n, args.seed), indent=2))


if __name__ == "__main__":
    main()
