"""The mig_vs_grpo task generator, corruption and tokenizer (experiments/mig_vs_grpo, package-free)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

FOLDER = Path(__file__).resolve().parents[2] / "experiments" / "mig_vs_grpo"


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FOLDER / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


task = _load("task")
policy = _load("policy")


def test_the_generator_gives_the_same_problems_for_the_same_seed_and_others_for_another() -> None:
    first = [p.question for p in task.problems("train", 50, seed=3)]
    assert first == [p.question for p in task.problems("train", 50, seed=3)]
    assert first != [p.question for p in task.problems("train", 50, seed=4)]
    assert len(set(first)) == 50


def test_train_and_held_out_questions_are_disjoint() -> None:
    train = {p.question for p in task.problems("train", 2000, seed=0)}
    held_out = {p.question for p in task.problems("held_out", 500, seed=0)}
    assert not train & held_out
    assert all(task.split_of(q) == "held_out" for q in held_out)


def test_a_clean_demonstration_is_one_valid_step_per_line_ending_in_the_answer_line() -> None:
    problem = task.Problem((3, 7, 5, 2))
    demo = task.demonstrate(problem)
    assert demo.completion == "3<7 drop 3\n5<7 drop 5\n2<7 drop 2\nA: 7"
    assert problem.question == "3 7 5 2" and problem.answer == 7
    assert all(task.step_is_valid(step) for step in demo.steps)
    assert task.parse_answer(demo.completion) == 7 and demo.is_correct


def test_corruption_breaks_exactly_one_step_keeps_later_steps_consistent_and_changes_the_answer() -> None:
    rng = random.Random(5)
    seen_positions = set()
    for problem in task.problems("held_out", 300, seed=1):
        clean, bad = task.demonstrate(problem), task.corrupt(problem, rng)
        invalid = [i for i, step in enumerate(bad.steps) if not task.step_is_valid(step)]
        assert invalid == [bad.wrong_step]
        assert bad.steps[: bad.wrong_step] == clean.steps[: bad.wrong_step]
        assert bad.steps[bad.wrong_step].endswith(f"drop {problem.answer}")  # the wrong step drops the answer
        dropped = [int(step.rsplit(" ", 1)[1]) for step in bad.steps]
        assert sorted([*dropped, bad.answer]) == sorted(problem.digits)  # each digit dropped once, one left
        assert bad.answer != problem.answer
        assert task.parse_answer(bad.completion) == bad.answer and not bad.is_correct
        seen_positions.add(bad.wrong_step)
    assert seen_positions == {0, 1, 2, 3}


def test_corruption_of_a_maximum_in_last_place_can_only_hit_the_last_step() -> None:
    problem = task.Problem((1, 2, 3, 9))
    bad = task.corrupt(problem, random.Random(0))
    assert bad.wrong_step == 2 and bad.steps[-1] == "9<3 drop 9" and bad.answer == 3


def test_problems_hold_four_or_five_distinct_digits() -> None:
    for problem in task.problems("train", 500, seed=2):
        assert task.MIN_CANDIDATES <= len(problem.digits) <= task.MAX_CANDIDATES
        assert len(set(problem.digits)) == len(problem.digits)


def test_an_unknown_split_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="split"):
        task.problems("test", 1, seed=0)


def test_the_character_tokenizer_round_trips_text_one_token_per_character() -> None:
    tokenizer = policy.build_tokenizer()
    text = policy.prompt_text("3 7 5 2") + task.demonstrate(task.Problem((3, 7, 5, 2))).completion
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode([*ids, tokenizer.eos_token_id], skip_special_tokens=True) == text
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "3 7"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == policy.prompt_text("3 7")


def test_the_saved_policy_folder_loads_with_auto_classes_and_the_engine_probe(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mig_annotator.engine.probe.transformers_probe import TransformersProbe, TransformersProbeSettings

    tokenizer = policy.build_tokenizer()
    model = policy.build_model(tokenizer, seed=0)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.decode(loaded.encode("2<9 drop 2\nA: 9", add_special_tokens=False)) == "2<9 drop 2\nA: 9"
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.vocab_size == len(tokenizer)
    probe = TransformersProbe(TransformersProbeSettings(model=str(tmp_path), threads=1))
    assert probe.tokenizer.bos_token_id is None
