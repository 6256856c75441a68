"""Resume: a build killed at any moment and run again equals an uninterrupted build."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mig_annotator.builder.layout import OutputLayout
from mig_annotator.builder.manifest import read_manifest
from mig_annotator.builder.pipeline import run_build
from mig_annotator.engine import annotator as annotator_module
from mig_annotator.engine import atomic_files
from mig_annotator.engine.verify import ProcessVerifier
from tests.builder.conftest import (
    CLI,
    FAKE_IDENTITY,
    REPO,
    FakeProbe,
    arithmetic_rows,
    make_plan,
    write_jsonl,
)


class SimulatedCrash(BaseException):
    """Raised in place of a write, like a kill at that instant (BaseException: nothing catches it)."""


def output_state(out: Path) -> dict[str, Any]:
    """Everything a build leaves that must not depend on interruptions: rows, rejects, manifest."""
    layout = OutputLayout(out)
    manifest = read_manifest(layout.manifest)
    assert manifest is not None
    return {
        "files": sorted(path.name for path in out.iterdir()),
        "parts": [pq.read_table(path) for path in layout.parts()],
        "rejects": pq.read_table(layout.rejects),
        "manifest": manifest.model_dump(exclude={"timings", "versions"}),
    }


def assert_same_output(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual["files"] == expected["files"]
    assert len(actual["parts"]) == len(expected["parts"])
    for got, want in zip(actual["parts"], expected["parts"], strict=True):
        assert got.schema.equals(want.schema)
        assert got.equals(want), "part files differ"
    assert actual["rejects"].equals(expected["rejects"])
    assert actual["manifest"] == expected["manifest"]


def fake_inputs(tmp_path: Path) -> Path:
    rows = arithmetic_rows(12, seed=4)
    rows[2]["question"] = None
    rows[9]["completion"] = ""
    return write_jsonl(tmp_path / "in.jsonl", rows)


def fake_plan(source: Path, out: Path):
    return make_plan(
        FAKE_IDENTITY, [source], out, shard_rows=5, window_rows=3, group_rows=2, row_group_rows=2
    )


class KeptVerifier(ProcessVerifier):
    """The real answer verifier, kept across builds: each build's annotator closes it; its workers stay."""

    def close(self) -> None:
        pass

    def close_for_real(self) -> None:
        super().close()


@pytest.fixture
def one_verifier_for_every_build(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """About 60 builds: one set of math-verify workers for all, not a start (about 1 s) per build."""
    verifier = KeptVerifier()
    monkeypatch.setattr(annotator_module, "ProcessVerifier", lambda: verifier)
    yield
    verifier.close_for_real()


@pytest.mark.usefixtures("one_verifier_for_every_build")
def test_a_crash_at_every_write_then_a_rerun_equals_an_uninterrupted_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = fake_inputs(tmp_path)
    real_replace = os.replace
    writes = 0

    def counting_replace(src: Any, dst: Any) -> None:
        nonlocal writes
        writes += 1
        real_replace(src, dst)

    monkeypatch.setattr(atomic_files.os, "replace", counting_replace)
    run_build(fake_plan(source, tmp_path / "reference"), FakeProbe())
    expected = output_state(tmp_path / "reference")
    total_writes = writes
    assert total_writes > 20

    for crash_at in range(1, total_writes + 1):
        for after_write in (crash_at % 2 == 0,):  # before odd writes, after even ones
            out = tmp_path / f"crash-{crash_at}-{after_write}"
            calls = 0

            def crashing_replace(
                src: Any, dst: Any, crash_at: int = crash_at, after: bool = after_write
            ) -> None:
                nonlocal calls
                calls += 1
                if calls == crash_at and not after:
                    raise SimulatedCrash
                real_replace(src, dst)
                if calls == crash_at:
                    raise SimulatedCrash

            monkeypatch.setattr(atomic_files.os, "replace", crashing_replace)
            with pytest.raises(SimulatedCrash):
                run_build(fake_plan(source, out), FakeProbe())
            monkeypatch.setattr(atomic_files.os, "replace", real_replace)
            result = run_build(fake_plan(source, out), FakeProbe())
            assert_same_output(output_state(out), expected)
            assert not (out / "_work").exists()
            assert result.manifest.timings is not None
            shutil.rmtree(out)


def commit_events(out: Path) -> set[str]:
    """Files the build commits (checkpoints, markers, outputs); not the per-run session record."""
    while True:
        try:
            return {
                str(path.relative_to(out))
                for path in out.rglob("*")
                if path.is_file()
                and not path.name.startswith(".")
                and path.name not in ("sessions.json", "_manifest.json")
            }
        except FileNotFoundError:  # a folder vanished while listing: list again
            continue


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_build(
    tmp_path: Path, model_path: Path, probe, real_identity
) -> None:
    rows = arithmetic_rows(12, seed=21)
    rows[5]["question"] = None
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    layout = {"shard_rows": 5, "window_rows": 3, "group_rows": 1}
    reference = make_plan(
        real_identity, [source], tmp_path / "reference", policy_tokenizer=model_path, **layout
    )
    run_build(reference, probe)
    expected = output_state(tmp_path / "reference")
    args = [*CLI, "build", str(source), "--policy-tokenizer", str(model_path), "--no-progress"]
    for name, value in layout.items():
        args += [f"--{name.replace('_', '-')}", str(value)]

    rng = random.Random(20240611)
    out = tmp_path / "killed"
    kills = runs = 0
    startup: float | None = None
    gaps: list[float] = []  # seconds between two commits seen in one run
    kill_log: list[str] = []
    while True:
        runs += 1
        seen = commit_events(out)
        process = subprocess.Popen(
            [*args, "--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        began = time.monotonic()
        deadline = None
        if kills < 6 and startup is not None and rng.random() < 0.4:
            deadline = began + rng.uniform(0.1, 1.0) * startup  # while starting: imports, model, planning
        last_commit = None
        while process.poll() is None:
            now = time.monotonic()
            if kills < 6 and (new := commit_events(out) - seen):
                seen |= new
                if last_commit is not None:
                    gaps.append(now - last_commit)
                startup = startup or now - began
                last_commit = now
                if deadline is None and gaps:  # mid-group, mid-write or while finishing
                    deadline = now + rng.uniform(0.0, 1.2) * sorted(gaps)[len(gaps) // 2]
            if deadline is not None and now >= deadline:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
                kill_log.append(f"{now - began:.2f}s")
                break
            time.sleep(0.01)
        else:
            assert process.returncode == 0, process.stderr.read().decode() if process.stderr else ""
            break
    assert kills >= 6, kill_log
    assert_same_output(output_state(out), expected)
    manifest = read_manifest(out / "_manifest.json")
    assert manifest is not None and manifest.timings is not None
    assert 1 < manifest.timings.sessions <= runs  # runs killed before claiming the folder do not count
    assert manifest.counts is not None and (manifest.counts.annotated, manifest.counts.rejected) == (11, 1)
    assert not (out / "_work").exists()
