"""Probe prompts: nested prefixes, identical answer tokens, lm-eval whitespace handling, chat mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mig_annotator.engine.prompt import PromptBuilder, split_trailing_whitespace
from mig_annotator.schemas import PromptTemplate
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def tokenizer(default_model_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path)


@pytest.fixture(scope="module")
def builder(tokenizer) -> PromptBuilder:
    return PromptBuilder(tokenizer, PromptTemplate())


def test_trailing_whitespace_moves_into_the_continuation() -> None:
    assert split_trailing_whitespace("the final answer is: ", "18") == ("the final answer is:", " 18")
    assert split_trailing_whitespace("Answer:\n ", "x") == ("Answer:", "\n x")
    assert split_trailing_whitespace("no space", "7") == ("no space", "7")


def test_prefixes_decode_to_the_rendered_prompt(builder: PromptBuilder, tokenizer) -> None:
    steps = ["Half of 2 is 1 bolt.", "So 2 + 1 = 3 bolts in total."]
    sequence = builder.build("How many bolts?", steps, "3")
    rendered = "Question: How many bolts?\nAnswer: Let's think step by step.\n"
    for k in range(len(steps) + 1):
        expected = rendered + "".join(f"{step}\n" for step in steps[:k])
        assert tokenizer.decode(sequence.trace_ids[: sequence.boundaries[k]]) == expected
        assert tokenizer.decode(sequence.probe_ids(k)) == expected + "Therefore, the final answer is: 3"
    assert sequence.boundaries[-1] == len(sequence.trace_ids)


def test_answer_tokens_are_what_follows_the_answer_prefix_in_a_joint_tokenisation(builder, tokenizer) -> None:
    sequence = builder.build("Q?", ["a step"], "1,250 dollars")
    joint = tokenizer("Therefore, the final answer is: 1,250 dollars", add_special_tokens=False)["input_ids"]
    assert list(sequence.continuation_ids) == joint
    answer_ids = sequence.continuation_ids[-sequence.n_answer_tokens :]
    assert tokenizer.decode(answer_ids) == " 1,250 dollars"


def test_piecewise_tokens_equal_whole_text_tokens_on_the_fixture(builder: PromptBuilder, tokenizer) -> None:
    """Splitting at newlines costs nothing here: the pieces tokenise exactly as the whole text does."""
    with (FIXTURES / "synthetic_traces.jsonl").open() as handle:
        records = [json.loads(line) for line in handle]
    for record in records:
        steps = record["completion"].split("\n")[:-1]
        sequence = builder.build(record["question"], steps, record["reference_answer"])
        whole = builder.header_text(record["question"]) + "".join(builder.step_text(s) for s in steps)
        assert list(sequence.trace_ids) == tokenizer(whole, add_special_tokens=False)["input_ids"]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1), max_size=6),
    answer=st.text(min_size=1).filter(lambda text: text.strip() != ""),
)
def test_every_prefix_is_nested_in_the_next_and_shares_the_continuation(builder, steps, answer) -> None:
    sequence = builder.build("What?", steps, answer)
    assert len(sequence.boundaries) == len(steps) + 1
    for k in range(len(steps)):
        assert sequence.boundaries[k] < sequence.boundaries[k + 1]
        assert (
            sequence.probe_ids(k + 1)[: sequence.boundaries[k]]
            == sequence.probe_ids(k)[: sequence.boundaries[k]]
        )
    continuation = len(sequence.continuation_ids)
    assert sequence.minimal_tokens == len(sequence.trace_ids) + (len(steps) + 1) * continuation


def test_chat_mode_wraps_the_question_in_the_model_chat_template(tokenizer) -> None:
    builder = PromptBuilder(tokenizer, PromptTemplate(chat=True))
    header = builder.header_text("What is 2+2?")
    assert header.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    sequence = builder.build("What is 2+2?", ["2+2=4."], "4")
    assert tokenizer.decode(sequence.trace_ids[: sequence.boundaries[0]]) == header


def test_question_with_braces_is_inserted_verbatim(builder: PromptBuilder) -> None:
    assert "{x}" in builder.header_text("Solve for {x} in {step}")


def test_a_leading_bos_token_is_kept_once_before_the_header() -> None:
    class BosTokenizer:
        bos_token_id = 1

        def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict:
            encoded = [[ord(ch) for ch in text] for text in texts]
            return {"input_ids": [[1, *ids] if add_special_tokens else ids for ids in encoded]}

    sequence = PromptBuilder(BosTokenizer(), PromptTemplate(header="Q: {question}\n")).build("hi", ["s"], "a")
    assert sequence.trace_ids[:4] == (1, ord("Q"), ord(":"), ord(" "))
    assert sequence.trace_ids.count(1) == 1 and sequence.boundaries[0] == 1 + len("Q: hi\n")


def test_template_placeholders_are_required() -> None:
    with pytest.raises(ValueError, match=r"prompt.step must contain \{step\}"):
        PromptTemplate(step="no placeholder")
