"""The controls experiment's parts (experiments/mig_vs_grpo): the oracle's and the placebo's step rewards,
the credit AUROC, the power calculation and the paired rule, the workers and stretch scheduling, and the
pre-registered config."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.experiments.test_mig_vs_grpo_task import _load

task = _load("task")
policy = _load("policy")
controls = _load("controls")
power = _load("power")
config_module = _load("experiment_config")
report = _load("report")
run = _load("run")

# 3 7 5 2: a valid first step, a second that drops the answer (7 > 5), a third after it
COMPLETION = "3<7 drop 3\n7<5 drop 7\n2<5 drop 2\nA: 5"


@pytest.fixture(scope="module")
def annotation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The engine's real annotation of COMPLETION, by a randomly initialised tiny policy as the probe."""
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe.transformers_probe import TransformersProbe, TransformersProbeSettings
    from mig_annotator.schemas import ScoringConfig, Trace
    from mig_annotator.schemas.config import PromptTemplate

    folder = tmp_path_factory.mktemp("tiny-policy")
    tokenizer = policy.build_tokenizer()
    policy.build_model(tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    probe = TransformersProbe(TransformersProbeSettings(model=str(folder), threads=1))
    config = ScoringConfig(prompt=PromptTemplate(**policy.PROBE_TEMPLATE))
    with Annotator(probe, config) as annotator:
        trace = Trace(id="t", question="3 7 5 2", completion=COMPLETION, reference_answer="7")
        (note,) = annotator.annotate([trace])
    return note


def test_the_task_grader_gives_1_until_the_first_false_step_or_one_with_a_digit_out_of_the_running() -> None:
    problem = task.Problem((3, 7, 5, 2))
    assert task.oracle_step_rewards(problem, ["3<7 drop 3", "5<7 drop 5", "2<7 drop 2"]) == [1.0, 1.0, 1.0]
    assert task.oracle_step_rewards(problem, ["3<7 drop 3", "7<5 drop 7", "2<5 drop 2"]) == [1.0, 0.0, 0.0]
    # another valid knock-out order keeps the answer alive too
    assert task.oracle_step_rewards(problem, ["2<5 drop 2", "3<5 drop 3", "5<7 drop 5"]) == [1.0, 1.0, 1.0]
    # a digit already dropped, a digit not in the problem, a malformed line
    assert task.oracle_step_rewards(problem, ["3<7 drop 3", "3<5 drop 3"]) == [1.0, 0.0]
    assert task.oracle_step_rewards(problem, ["1<7 drop 1", "3<7 drop 3"]) == [0.0, 0.0]
    assert task.oracle_step_rewards(problem, ["3 < 7", "5<7 drop 5"]) == [0.0, 0.0]


def test_the_oracle_keeps_the_probes_steps_and_its_rewards_sit_where_migs_do(annotation: Any) -> None:
    from mig_annotator.schemas.token_alignment import align_annotation, token_offsets
    from mig_annotator.trainer.advantages import (
        AdvantageSettings,
        credit_from_annotation,
        group_token_advantages,
    )

    assert [s.text for s in annotation.steps] == ["3<7 drop 3", "7<5 drop 7", "2<5 drop 2"]
    oracle = controls.oracle_annotation(annotation, controls.problem_of("3 7 5 2"))
    assert [s.reward for s in oracle.steps] == [1.0, 0.0, 0.0]
    assert oracle.process_reward == 1.0 and oracle.max_reward == 1.0
    assert [s.span for s in oracle.steps] == [s.span for s in annotation.steps]
    assert [s.mig for s in oracle.steps] == [s.mig for s in annotation.steps]
    assert (oracle.outcome, oracle.cot_span, oracle.answer_span) == (
        annotation.outcome,
        annotation.cot_span,
        annotation.answer_span,
    )
    tokenizer = policy.build_tokenizer()
    ids = tokenizer.encode(COMPLETION, add_special_tokens=False)
    offsets = token_offsets(tokenizer, ids, COMPLETION)
    placed, mig_placed = align_annotation(oracle, offsets), align_annotation(annotation, offsets)
    # one token per character: step 1 ends at character 9 ("3" of "drop 3"), steps 2 and 3 at 20 and 31
    assert placed.step_end_tokens.tolist() == mig_placed.step_end_tokens.tolist() == [9, 20, 31]
    assert placed.step_rewards[9] == 1.0 and placed.step_rewards.sum() == 1.0
    assert np.array_equal(placed.cot_mask, mig_placed.cot_mask)
    # sequence placement in a group of two (the oracle's completion and a clean one, P = 1 and 3, both
    # wrong): the process part is norm(P) on every CoT token: (1 - 2) / sqrt(2), (3 - 2) / sqrt(2)
    clean = controls.with_step_rewards(oracle, [1.0, 1.0, 1.0])
    credits = [credit_from_annotation(a, offsets) for a in (oracle, clean)]
    settings = AdvantageSettings(placement="sequence", sft_weight=0.0)
    first, second = group_token_advantages(credits, settings)
    cot = placed.cot_mask
    assert np.allclose(first[cot], -1 / np.sqrt(2)) and np.allclose(second[cot], 1 / np.sqrt(2))
    assert np.allclose(first[~cot], 0.0)  # equal outcomes: no outcome advantage


def test_the_placebo_is_a_seeded_permutation_of_the_batchs_mig_rewards(annotation: Any) -> None:
    batch = [
        controls.with_step_rewards(annotation, [0.5, 0.0, 0.25]),
        None,  # an unscored completion stays unscored
        controls.with_step_rewards(annotation, [1.0, 0.75, 0.0]),
    ]
    before = [[s.reward for s in a.steps] for a in batch if a is not None]
    shuffled = controls.placebo_annotations(batch, random.Random(3))
    after = [[s.reward for s in a.steps] for a in shuffled if a is not None]
    assert shuffled[1] is None
    pooled = sorted(r for rs in before for r in rs)
    assert sorted(r for rs in after for r in rs) == pooled == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]
    assert after != before
    assert [len(r) for r in after] == [3, 3]
    again = controls.placebo_annotations(batch, random.Random(3))
    assert [[s.reward for s in a.steps] for a in again if a is not None] == after
    assert [a.process_reward for a in shuffled if a is not None] == [sum(r) for r in after]


def test_the_placebo_redraws_an_identity_permutation_and_leaves_equal_rewards_alone(annotation: Any) -> None:
    class Identity(random.Random):
        def shuffle(self, x: list) -> None:  # type: ignore[override]
            return None

    batch = [controls.with_step_rewards(annotation, [0.5, 0.0, 0.25])]
    (moved,) = controls.placebo_annotations(batch, Identity())
    assert [s.reward for s in moved.steps] == [0.0, 0.25, 0.5]  # rotated once: a different assignment
    flat = [controls.with_step_rewards(annotation, [0.0, 0.0, 0.0])]
    (same,) = controls.placebo_annotations(flat, random.Random(0))
    assert [s.reward for s in same.steps] == [0.0, 0.0, 0.0]


def test_the_credit_auroc_ranks_first_invalid_steps_against_the_valid_steps_before(annotation: Any) -> None:
    problem = controls.problem_of("3 7 5 2")
    # the same chain (valid, FIRST INVALID, after) three times with other mig_k: scores are -mig_k
    notes = []
    for migs in ([0.5, -1.0, 3.0], [0.2, 0.3, -5.0], [-0.4, 0.1, 0.0]):
        steps = [s.model_copy(update={"mig": m}) for s, m in zip(annotation.steps, migs, strict=True)]
        notes.append(annotation.model_copy(update={"steps": steps}))
    measured = controls.credit_auroc([*notes, None], [problem] * 4, "mig")
    # positives (first invalid): -(-1.0)=1.0, -0.3, -0.1; negatives (valid before): -0.5, -0.2, 0.4
    # pairs won: 1.0 beats all 3; -0.3 beats -0.5 only; -0.1 beats -0.5 and -0.2: 6 of 9
    assert measured == {"auroc": pytest.approx(6 / 9), "first_invalid_steps": 3, "valid_steps": 3}
    assert controls.credit_auroc(notes[:1], [problem], "mig")["auroc"] == 1.0
    assert controls.credit_auroc([], [], "mig")["auroc"] is None


def test_the_minimum_detectable_difference_is_the_t_formula_computed_by_hand() -> None:
    # t_{0.975, 9} = 2.262157, t_{0.80, 9} = 0.883404 (tables); (2.262157 + 0.883404) * 0.05 / sqrt(10)
    assert power.t_quantile(0.975, 9) == pytest.approx(2.262157, abs=1e-5)
    assert power.t_quantile(0.80, 9) == pytest.approx(0.883404, abs=1e-5)
    assert power.t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    assert power.minimum_detectable_difference(0.05, 10) == pytest.approx(0.049736, abs=1e-5)
    # 16 seeds: (2.131450 + 0.866120) * 0.05 / 4
    assert power.minimum_detectable_difference(0.05, 16) == pytest.approx(0.037470, abs=1e-5)
    assert power.seeds_for(0.05, 0.04) == 15
    with pytest.raises(ValueError, match="at least 2 seeds"):
        power.minimum_detectable_difference(0.05, 1)


def test_the_paired_rule_calls_a_win_only_when_the_t_interval_is_above_0() -> None:
    # mean 0.03, sd 0.02, n 10: half width 2.262157 * 0.02 / sqrt(10) = 0.014307
    diffs = [0.03 + 0.02 * z for z in (-1.5, -1, -0.5, 0, 0, 0, 0, 0.5, 1, 1.5)]
    sd = float(np.std(diffs, ddof=1))
    mean, _, high = power.paired_interval(diffs)
    assert mean == pytest.approx(0.03)
    assert high - mean == pytest.approx(2.262157 * sd / np.sqrt(10), abs=1e-6)
    assert report.paired_verdict(diffs) == "win"
    assert report.paired_verdict([-d for d in diffs]) == "lose"
    assert report.paired_verdict([d - 0.03 for d in diffs]) == "tie"
    assert report.paired_verdict([0.5]) == "undecided (< 2 seeds)"


def test_the_oracle_share_is_the_ratio_of_mean_gains_with_a_bootstrap_interval_over_seeds() -> None:
    outcome = {s: 0.2 + 0.01 * s for s in range(6)}
    oracle = {s: v + 0.2 for s, v in outcome.items()}
    half = {s: v + 0.1 for s, v in outcome.items()}
    assert power.oracle_share(half, outcome, oracle) == pytest.approx((0.5, 0.5, 0.5))
    noisy = {s: v + (0.05 if s % 2 else 0.15) for s, v in outcome.items()}
    share, low, high = power.oracle_share(noisy, outcome, oracle, resamples=2000)
    assert share == pytest.approx(0.5) and 0.25 <= low < 0.5 < high <= 0.75
    assert power.oracle_share(half, outcome, {0: 0.4}) is None


def test_auto_workers_take_both_cores_only_while_the_machine_is_otherwise_idle() -> None:
    assert run.workers_for("auto", running=0, load=0.2, cores=2) == 2
    assert run.workers_for("auto", running=0, load=1.3, cores=2) == 1
    assert run.workers_for("auto", running=1, load=1.2, cores=2) == 2  # the load is this command's own run
    assert run.workers_for("auto", running=1, load=2.4, cores=2) == 1
    assert run.workers_for("3", running=0) == 3
    with pytest.raises(ValueError, match="--workers"):
        run.workers_for("0", running=0)


def test_resumption_skips_finished_runs_and_a_spent_stretch_starts_none(tmp_path: Path) -> None:
    controls_config = config_module.load(config_module.CONTROLS_CONFIG)
    regime = controls_config.regime_config("registered")
    finished = run.Job(regime, tmp_path, "outcome", 0)
    finished.done_file.parent.mkdir(parents=True)
    finished.done_file.write_text(json.dumps({"arm": "outcome", "seed": 0, "run_wall_s": 1.0}))
    waiting = run.Job(regime, tmp_path, "oracle", 0, expected_s=600.0)
    assert run.pending([finished, waiting]) == ([waiting], [{"arm": "outcome", "seed": 0, "run_wall_s": 1.0}])
    summaries, left = run.run_jobs([finished, waiting], "cpu", False, "1", stretch_s=60.0)
    assert summaries == [{"arm": "outcome", "seed": 0, "run_wall_s": 1.0}] and left == 1
    assert not waiting.done_file.parent.exists()  # never started: 600 s expected, 60 s of stretch


def test_the_registered_controls_config_holds_its_power_and_controls_like_mig_but_for_the_reward() -> None:
    config = config_module.load(config_module.CONTROLS_CONFIG)
    assert len(config.seeds) >= 10
    arms = {arm.name: arm for arm in config.arms}
    assert {"outcome", "decoupled_sequence", "oracle", "placebo"} <= set(arms)
    mig = arms["decoupled_sequence"]
    for name, source in (("oracle", "oracle"), ("placebo", "placebo")):
        control = arms[name]
        assert control.process_reward == source
        assert (control.reward, control.probe, control.advantages) == (mig.reward, mig.probe, mig.advantages)
    assert {r.name for r in config.regimes} == {"registered", "weak", "long"}
    for regime in config.regimes:
        expected = power.minimum_detectable_difference(
            config.power.paired_sd[regime.name], len(config.seeds), config.power.alpha, config.power.power
        )
        assert config.power.minimum_detectable_difference[regime.name] == pytest.approx(expected, abs=5e-4)
    long = config.regime_config("long")
    assert long.task.candidates == (6, 7) and long.training.max_completion_length >= 80
    assert long.rule == "paired_t"
