"""Rescoring a built dataset without the probe (builder.rescore): equal to a full rebuild with the new
settings, resumable, and refusing what needs a probe pass."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import polars as pl
import pytest

from mig_annotator.builder.entry import prepare_build
from mig_annotator.builder.errors import BuildError, DatasetError, OutputConflictError
from mig_annotator.builder.manifest import read_manifest
from mig_annotator.builder.pipeline import NullObserver, run_build
from mig_annotator.builder.rescore import RescoreSettings, prepare_rescore, rescore_dataset
from mig_annotator.builder.settings import BuildSettings
from mig_annotator.engine.probe import TransformersProbeSettings
from mig_annotator.schemas import ScoringConfig
from tests.builder.conftest import REPO, make_plan, run_cli, write_jsonl

SAMPLES = REPO / "engine" / "data" / "sample_traces.jsonl"
CONFIG_A = ScoringConfig()
CONFIG_B = ScoringConfig(aggregation="sum", watermark="gain", sft_threshold=0.05, sft_statistic="sum")
REWARD_FLOATS = ("v0", "process_reward", "max_reward")
STEP_FLOATS = ("v", "mig", "watermark", "reward")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample traces and one row that is rejected while mapping (no question), in three shards."""
    rows = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows.insert(2, {"id": "no-question", "completion": "1 + 1 = 2\nA: 2", "reference_answer": "2"})
    return write_jsonl(tmp_path_factory.mktemp("rescore-in") / "rollouts.jsonl", rows)


def build(probe, identity, inputs: Path, out: Path, scoring: ScoringConfig, model_path: Path) -> Path:
    plan = make_plan(
        identity,
        [inputs],
        out,
        scoring=scoring,
        shard_rows=2,
        window_rows=2,
        group_rows=2,
        policy_tokenizer=model_path,
    )
    run_build(plan, probe)
    return out


@pytest.fixture(scope="module")
def built_a(tmp_path_factory, probe, real_identity, inputs, model_path) -> Path:
    return build(probe, real_identity, inputs, tmp_path_factory.mktemp("a") / "ds", CONFIG_A, model_path)


@pytest.fixture(scope="module")
def built_b(tmp_path_factory, probe, real_identity, inputs, model_path) -> Path:
    return build(probe, real_identity, inputs, tmp_path_factory.mktemp("b") / "ds", CONFIG_B, model_path)


def rows(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted(folder.glob("part-*.parquet")))


def assert_equals_rebuild(rescored: Path, rebuilt: Path) -> None:
    got, want = rows(rescored), rows(rebuilt)
    assert got.columns == want.columns and got.height == want.height > 0
    assert got["trace_id"].to_list() == want["trace_id"].to_list()
    for name in REWARD_FLOATS:
        assert got[name].to_list() == pytest.approx(want[name].to_list(), abs=1e-6), name
    for got_steps, want_steps in zip(got["steps"].to_list(), want["steps"].to_list(), strict=True):
        assert len(got_steps) == len(want_steps) > 0
        for name in STEP_FLOATS:
            assert [s[name] for s in got_steps] == pytest.approx([s[name] for s in want_steps], abs=1e-6)
        assert [(s["text"], s["span"]) for s in got_steps] == [(s["text"], s["span"]) for s in want_steps]
    for got_tokens, want_tokens in zip(got["token_rewards"], want["token_rewards"], strict=True):
        assert got_tokens.to_list() == pytest.approx(want_tokens.to_list(), abs=1e-6)
    exact = [c for c in got.columns if c not in {*REWARD_FLOATS, "steps", "token_rewards"}]
    assert got.select(exact).equals(want.select(exact))  # sft_gate, config_hash, masks, kept columns...
    assert pl.read_parquet(rescored / "_rejects.parquet").equals(
        pl.read_parquet(rebuilt / "_rejects.parquet")
    )
    new, full = read_manifest(rescored / "_manifest.json"), read_manifest(rebuilt / "_manifest.json")
    assert new is not None and full is not None and new.status == "complete"
    assert new.identity == full.identity
    assert new.counts == full.counts
    assert new.reward_stats == pytest.approx(full.reward_stats, abs=1e-6)
    assert (rescored / "_SUCCESS").is_file() and not (rescored / "_work").exists()


def test_a_rescore_to_new_settings_equals_a_full_rebuild_with_them(built_a, built_b, tmp_path) -> None:
    manifest = rescore_dataset(RescoreSettings(source=built_a, out=tmp_path / "b", scoring=CONFIG_B))
    assert manifest.identity.config_hash == CONFIG_B.config_hash() != CONFIG_A.config_hash()
    assert rows(tmp_path / "b")["config_hash"].unique().to_list() == [CONFIG_B.config_hash()]
    assert manifest.counts is not None and manifest.counts.rejected == 1 and manifest.counts.shards == 3
    assert rows(tmp_path / "b")["process_reward"].to_list() != rows(built_a)["process_reward"].to_list()
    assert_equals_rebuild(tmp_path / "b", built_b)
    # the counts keep the tokens the values came from; the probe throughput is this run's: nothing forwarded
    built = read_manifest(built_b / "_manifest.json")
    assert built is not None and built.timings is not None and built.timings.tokens_per_second > 0
    assert manifest.counts.tokens_forwarded == built.counts.tokens_forwarded > 0
    assert manifest.timings is not None and manifest.timings.tokens_per_second == 0.0
    # and back (sum -> mean, gain -> level): the rebuild with the first settings
    rescore_dataset(RescoreSettings(source=built_b, out=tmp_path / "a", scoring=CONFIG_A))
    assert_equals_rebuild(tmp_path / "a", built_a)


def test_a_rescored_dataset_is_the_finished_build_of_the_new_settings(built_a, inputs, tmp_path) -> None:
    out = tmp_path / "b"
    rescore_dataset(RescoreSettings(source=built_a, out=out, scoring=CONFIG_B))
    source = read_manifest(built_a / "_manifest.json")
    assert source is not None and source.identity.policy_tokenizer is not None
    settings = BuildSettings(
        inputs=[str(inputs)],
        out=out,
        scoring=CONFIG_B,
        shard_rows=2,
        window_rows=2,
        group_rows=2,
        policy_tokenizer=Path(source.identity.policy_tokenizer.path),
    )
    prepared = prepare_build(settings, TransformersProbeSettings())
    assert prepared.finished is not None and prepared.probe is None  # build sees nothing left to do
    again = prepare_rescore(RescoreSettings(source=built_a, out=out, scoring=CONFIG_B))
    assert again.finished is not None


class _InterruptAfterShards(NullObserver):
    def __init__(self, shards: int) -> None:
        self.left = shards

    def on_rows(self, rows: int, annotated: int, rejected: int, tokens: int) -> None:
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt


def test_an_interrupted_rescore_resumes_to_the_same_dataset(built_a, built_b, tmp_path) -> None:
    settings = RescoreSettings(source=built_a, out=tmp_path / "b", scoring=CONFIG_B)
    with pytest.raises(KeyboardInterrupt):
        prepare_rescore(settings).run(_InterruptAfterShards(2))
    assert sorted(p.name for p in (tmp_path / "b" / "_work").glob("shard-*.done")) == [
        "shard-00000.done",
        "shard-00001.done",
    ]
    assert not (tmp_path / "b" / "_SUCCESS").exists()
    manifest = rescore_dataset(settings)
    assert manifest.timings is not None and manifest.timings.sessions == 2
    assert_equals_rebuild(tmp_path / "b", built_b)


def test_a_rescore_refuses_settings_that_need_the_probe_naming_them(built_a, tmp_path) -> None:
    changed = CONFIG_A.model_copy(update={"segmenter": "lines", "context_limit": "window"})
    with pytest.raises(BuildError, match=r"need a rebuild .*segmenter \('auto' -> 'lines'\); context_limit"):
        prepare_rescore(RescoreSettings(source=built_a, out=tmp_path / "x", scoring=changed))
    assert not (tmp_path / "x").exists()


def test_a_rescore_refuses_another_build_in_its_output_unless_told_to_overwrite(built_a, tmp_path) -> None:
    out = tmp_path / "b"
    rescore_dataset(RescoreSettings(source=built_a, out=out, scoring=CONFIG_B))
    other = CONFIG_B.model_copy(update={"watermark": "level"})
    with pytest.raises(OutputConflictError, match=r"changed: config_hash, scoring\.watermark"):
        prepare_rescore(RescoreSettings(source=built_a, out=out, scoring=other))
    manifest = rescore_dataset(RescoreSettings(source=built_a, out=out, scoring=other, overwrite=True))
    assert manifest.identity.config_hash == other.config_hash()
    with pytest.raises(OutputConflictError, match="rescore writes a new folder"):
        prepare_rescore(RescoreSettings(source=built_a, out=built_a / "sub", scoring=CONFIG_B))


def test_a_rescore_refuses_a_source_that_is_not_a_finished_build(built_a, tmp_path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(built_a, partial)
    (partial / "_SUCCESS").unlink()
    with pytest.raises(DatasetError, match="not a finished build"):
        prepare_rescore(RescoreSettings(source=partial, out=tmp_path / "b", scoring=CONFIG_B))


def _broken_source(built: Path, tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A copy of ``built`` whose second part file is truncated, random bytes, or a file of another schema."""
    source = tmp_path / f"src-{how}"
    shutil.copytree(built, source)
    part = source / "part-00001.parquet"
    if how == "truncated":
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    elif how == "random":
        part.write_bytes(random.Random(7).randbytes(4096))
    else:
        shutil.copyfile(source / "_rejects.parquet", part)
    return source, part


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "not a readable Parquet file"),
        ("random", "not a readable Parquet file"),
        ("other-schema", "not a part file of this dataset's schema (missing completion, v0, steps"),
    ],
)
def test_a_rescore_of_a_damaged_part_file_names_it_and_writes_nothing(
    built_a, tmp_path, how: str, message: str
) -> None:
    """A truncated, random or foreign part file ended in ArrowInvalid / KeyError tracebacks and left a
    partial output."""
    source, part = _broken_source(built_a, tmp_path, how)
    out = tmp_path / "new"
    with pytest.raises(DatasetError) as raised:
        rescore_dataset(RescoreSettings(source=source, out=out, scoring=CONFIG_B))
    assert str(raised.value).startswith(f"{part}: {message}")
    assert not out.exists()


def test_the_cli_names_a_damaged_part_file_in_one_error_line(built_a, tmp_path) -> None:
    source, part = _broken_source(built_a, tmp_path, "random")
    done = run_cli("rescore", str(source), str(tmp_path / "new"), "--aggregation", "sum")
    assert done.returncode != 0
    assert f"error: {part}: not a readable Parquet file" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr and not (tmp_path / "new").exists()
