"""`mig-annotator rescore`: the new dataset equals `build` with the changed options; it refuses what needs the
probe, and another build in its output without --overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from mig_annotator.schemas import ScoringConfig
from tests.cli.test_cli import ROOT, run_cli

SAMPLES = ROOT / "engine" / "data" / "sample_traces.jsonl"
BUILD = ("--shard-rows", "3", "--window-rows", "3", "--group-rows", "2", "--no-progress")


def parts(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted(folder.glob("part-*.parquet")))


def manifest(folder: Path) -> dict[str, object]:
    return json.loads((folder / "_manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample traces built with a non-default segmenter (which the rescore must keep)."""
    out = tmp_path_factory.mktemp("cli-rescore") / "lines"
    result = run_cli("build", str(SAMPLES), "--out", str(out), "--segmenter", "lines", *BUILD)
    assert result.returncode == 0, result.stderr
    return out


def test_rescore_writes_what_build_with_the_changed_options_writes(built: Path, tmp_path: Path) -> None:
    changes = ("--watermark", "gain", "--aggregation", "sum", "--sft-statistic", "sum")
    result = run_cli("rescore", str(built), str(tmp_path / "new"), *changes, "--no-progress")
    assert result.returncode == 0, result.stderr
    expected = ScoringConfig(segmenter="lines", watermark="gain", aggregation="sum", sft_statistic="sum")
    assert f"config_hash {expected.config_hash()}" in result.stdout
    rebuilt = run_cli(
        "build", str(SAMPLES), "--out", str(tmp_path / "full"), "--segmenter", "lines", *changes, *BUILD
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    got, want = parts(tmp_path / "new"), parts(tmp_path / "full")
    assert got.height == want.height == 5
    for name in ("v0", "process_reward", "max_reward"):
        assert got[name].to_list() == pytest.approx(want[name].to_list(), abs=1e-6), name
    for got_steps, want_steps in zip(got["steps"].to_list(), want["steps"].to_list(), strict=True):
        for name in ("v", "mig", "watermark", "reward"):
            assert [s[name] for s in got_steps] == pytest.approx([s[name] for s in want_steps], abs=1e-6)
    assert got["sft_gate"].to_list() == want["sft_gate"].to_list()
    assert got["config_hash"].unique().to_list() == [expected.config_hash()]
    assert manifest(tmp_path / "new")["identity"] == manifest(tmp_path / "full")["identity"]
    again = run_cli("rescore", str(built), str(tmp_path / "new"), *changes, "--no-progress")
    assert again.returncode == 0 and "already complete" in again.stdout


def test_rescore_refuses_a_setting_the_probe_reads_naming_it(built: Path, tmp_path: Path) -> None:
    result = run_cli("rescore", str(built), str(tmp_path / "x"), "--chat-template", "--max-steps", "4")
    assert result.returncode == 2
    assert (
        "need a rebuild (mig-annotator build): max_steps (256 -> 4); prompt.chat (False -> True)"
        in result.stderr
    )
    assert not (tmp_path / "x").exists()


def test_rescore_refuses_another_build_in_its_output_without_overwrite(built: Path, tmp_path: Path) -> None:
    assert run_cli("rescore", str(built), str(tmp_path / "new"), "--watermark", "gain").returncode == 0
    refused = run_cli("rescore", str(built), str(tmp_path / "new"), "--sft-threshold", "0.5")
    assert refused.returncode == 2 and "Use --overwrite to discard it" in refused.stderr
    forced = run_cli("rescore", str(built), str(tmp_path / "new"), "--sft-threshold", "0.5", "--overwrite")
    assert forced.returncode == 0, forced.stderr
    scoring = manifest(tmp_path / "new")["identity"]["scoring"]  # type: ignore[index]
    assert (scoring["watermark"], scoring["sft_threshold"], scoring["segmenter"]) == ("level", 0.5, "lines")
