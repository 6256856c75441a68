"""Builder test fixtures: the real default probe (loaded once), input files, and the package's fake probe
(:mod:`engine.probe.fake`) for the pure-logic tests of the checkpoint protocol."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mig_annotator.builder.plan import BuildPlan, plan_build
from mig_annotator.builder.settings import BuildSettings
from mig_annotator.engine.probe import TransformersProbeSettings, expected_identity, open_probe
from mig_annotator.engine.probe.fake import FakeProbe
from mig_annotator.schemas import ProbeIdentity

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mig_annotator.cli"]


def arithmetic_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Short GSM8K-like rollouts: three steps, a final `A: N` line, about 60 % correct."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, c = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 5)
        total = (a + b) * c
        correct = rng.random() < 0.6
        answer = total if correct else total + rng.randint(1, 9)
        rows.append(
            {
                "id": f"arith-{i:03d}",
                "question_id": f"q{i // 2}",
                "generator": ("alpha", "beta")[i % 2],
                "question": f"Tom has {a} apples and buys {b} more. Then he multiplies his apples by {c}. "
                "How many apples does he have?",
                "completion": f"Tom starts with {a} apples.\n"
                f"After buying he has {a} + {b} = {a + b} apples.\n"
                f"Then {a + b} * {c} = {answer}.\nA: {answer}",
                "reference_answer": str(total),
                "is_correct": correct,
            }
        )
    return rows


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {"COLUMNS": "200"},
    )


@pytest.fixture(scope="session")
def model_path() -> Path:
    from mig_annotator.engine.model_store import resolve_model_path

    return resolve_model_path(None)


@pytest.fixture(scope="session")
def probe(model_path: Path):
    """The real default probe, configured as `mig-annotator build` opens it."""
    return open_probe(TransformersProbeSettings())


@pytest.fixture(scope="session")
def real_identity(model_path: Path) -> ProbeIdentity:
    identity = expected_identity(TransformersProbeSettings(model=str(model_path)))
    assert identity is not None
    return identity


def make_plan(identity: ProbeIdentity, inputs: list[Path], out: Path, **settings: Any) -> BuildPlan:
    return plan_build(BuildSettings(inputs=[str(p) for p in inputs], out=out, **settings), identity)


# ------------------------------------------------------------------------------------------- fake probe

FAKE_IDENTITY = FakeProbe().identity()


@pytest.fixture(scope="session")
def built_dataset(
    tmp_path_factory: pytest.TempPathFactory, probe, real_identity: ProbeIdentity, model_path: Path
):
    """Eight arithmetic rollouts built with the real probe and the policy-tokenizer columns, in two shards."""
    from mig_annotator.builder.pipeline import run_build

    root = tmp_path_factory.mktemp("built")
    source = write_jsonl(root / "rollouts.jsonl", arithmetic_rows(8, seed=3))
    plan = make_plan(
        real_identity,
        [source],
        root / "dataset",
        shard_rows=4,
        window_rows=4,
        group_rows=2,
        policy_tokenizer=model_path,
    )
    run_build(plan, probe)
    return root / "dataset"
