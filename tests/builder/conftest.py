"""Builder test fixtures: the real default probe (loaded once), input files, and a fake probe for the
pure-logic tests of the checkpoint protocol."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mig_annotator.builder.manifest import ProbeIdentity, probe_identity
from mig_annotator.builder.plan import BuildPlan, plan_build
from mig_annotator.builder.settings import BuildSettings
from mig_annotator.mig.probe.base import ProbeResult, ProbeStats
from mig_annotator.mig.prompt import ProbeSequence

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
    from mig_annotator.mig.model_store import resolve_model_path

    return resolve_model_path(None)


@pytest.fixture(scope="session")
def probe(model_path: Path):
    """The real default probe, configured as `mig-annotator build` opens it."""
    from mig_annotator.mig.probe.factory import ProbeSettings, open_probe

    return open_probe(ProbeSettings())


@pytest.fixture(scope="session")
def real_identity(model_path: Path) -> ProbeIdentity:
    return probe_identity("transformers", model_path.name, model_path, "float32")


def make_plan(identity: ProbeIdentity, inputs: list[Path], out: Path, **settings: Any) -> BuildPlan:
    return plan_build(BuildSettings(inputs=[str(p) for p in inputs], out=out, **settings), identity)


# ------------------------------------------------------------------------------------------- fake probe


class CharTokenizer:
    """One token per character; no special tokens."""

    bos_token_id = None

    def __call__(self, text: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        return {"input_ids": [[ord(char) % 5000 + 1 for char in item] for item in text]}

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: object) -> str:
        return "".join(message["content"] for message in conversation)


class FakeProbe:
    """Deterministic log-probs from the prefix tokens: for unit tests of the file protocol only."""

    model_id = "fake-probe"
    context_limit = 4096

    def __init__(self) -> None:
        self.tokenizer = CharTokenizer()
        self.stats = ProbeStats()

    def score(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        results = []
        for sequence in sequences:
            rows = []
            for boundary in sequence.boundaries:
                seed = sum(sequence.trace_ids[:boundary]) % 997
                rows.append([-((seed * (t + 3)) % 89) / 30.0 - 0.1 for t in range(sequence.n_answer_tokens)])
            results.append(ProbeResult(np.asarray(rows, dtype=np.float64), sequence.minimal_tokens))
        self.stats.traces += len(sequences)
        return results


FAKE_IDENTITY = ProbeIdentity(
    backend="fake", model_id="fake-probe", model_path=None, dtype="float32", fingerprint="fake"
)


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
