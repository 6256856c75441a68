"""MigGRPOTrainer in two processes (``accelerate launch``, CPU, gloo) trains as one process does on the same
global batch: the same per-token advantages, SFT gates, logged loss and SFT NLL, to 1e-6.

tests/trainers/fixed_batch_run.py runs one optimizer step on a fixed batch (one group of four completions of
one prompt, split two and two over the processes, each scoring its own rows with the policy in process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.trainers, pytest.mark.model]

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "tests" / "trainers" / "fixed_batch_run.py"


def run(command: list[str], out_dir: Path) -> list[dict[str, Any]]:
    out_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["TRL_EXPERIMENTAL_SILENCE"] = "1"
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = sorted(out_dir.glob("rank-*.json"))
    return [json.loads(path.read_text(encoding="utf-8")) for path in ranks]


def rows_of(records: list[dict[str, Any]]) -> list[np.ndarray]:
    """Every completion's advantages, in global order, without the trailing padding."""
    rows = [np.array(row) for record in records for row in record["advantages"]]
    return [row[: max((i + 1 for i, v in enumerate(row) if v != 0), default=0)] for row in rows]


def logged(record: dict[str, Any]) -> dict[str, Any]:
    (entry,) = [entry for entry in record["history"] if "loss" in entry and "mig/sft_nll" in entry]
    return dict(entry)


def test_two_processes_train_as_one_on_the_same_global_batch(
    tmp_path: Path, default_model_path: Path
) -> None:
    model = str(default_model_path)
    (single,) = run([sys.executable, str(RUN), str(tmp_path / "one"), model], tmp_path / "one")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    pair = run([*launch, str(RUN), str(tmp_path / "two"), model], tmp_path / "two")
    assert len(pair) == 2 and [len(record["advantages"]) for record in pair] == [2, 2]

    one, two = rows_of([single]), rows_of(pair)
    assert len(one) == len(two) == 4
    for alone, split in zip(one, two, strict=True):
        assert len(alone) == len(split) and np.allclose(alone, split, rtol=0, atol=1e-6)
    assert any(np.any(row != 0) for row in one)  # the group really trains
    assert single["gates"] == pair[0]["gates"] + pair[1]["gates"] and any(single["gates"])
    alone_log = logged(single)
    for record in pair:
        split_log = logged(record)
        assert split_log["loss"] == pytest.approx(alone_log["loss"], abs=1e-6)
        assert split_log["mig/sft_nll"] == pytest.approx(alone_log["mig/sft_nll"], abs=1e-6)
        assert split_log["mig/zero_advantage_mig"] == alone_log["mig/zero_advantage_mig"]
