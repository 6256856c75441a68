"""Long-context test support: a synthetic 16k-token ``<think>`` trace and tiny long-context probe models.

Importable by tests and by bench scripts (the repo root on ``sys.path``)::

    from tests.long_context import long_think_completion, long_think_row, tiny_long_context_model

* :func:`long_think_row` / :func:`long_think_completion`: a deterministic reasoning-model completion,
  ``<think>`` + prose (one-line paragraphs separated by blank lines, and long runs of sentences without a
  newline) + ``</think>`` + a short final answer ("The answer is \\boxed{N}."), about ``target_tokens``
  tokens by the given tokenizer. The numbers are a running stock count that builds to N, the reference
  answer. With the default segmentation a 16k-token completion gives 100-256 steps (no step-cap merging).
* :func:`tiny_long_context_model`: a small random-initialised causal LM (Llama or Qwen2 architecture, any
  ``max_position_embeddings``, optional RoPE scaling) saved with SmolLM2's tokenizer, loadable with
  ``--model FOLDER``. Its numbers mean nothing; it exercises the plumbing at long contexts cheaply.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
Architecture = Literal["llama", "qwen2"]

# RoPE scalings transformers 5.19 accepts for Llama (``rope_parameters``), for 4x an 8k original context.
ROPE_LINEAR: dict[str, Any] = {"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0}
ROPE_YARN: dict[str, Any] = {
    "rope_type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_theta": 100000.0,
}
ROPE_LLAMA3: dict[str, Any] = {
    "rope_type": "llama3",
    "factor": 4.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_theta": 500000.0,
}


# ----------------------------------------------------------------------------------------------------------
# the synthetic trace
# ----------------------------------------------------------------------------------------------------------

_ITEMS = ("crates", "boxes", "pallets", "barrels")
_ASIDES = (
    "I should keep the damaged ones separate, but the question counts every one that is on the shelves.",
    "Nothing in the question says that anything leaves the warehouse on a holiday, so I will not assume it.",
    "It is easy to lose track here, so I write every intermediate total down before I move on.",
    "The order of arrivals and departures does not matter for the final count, only their sum does.",
    "Let me not round anything, since all of these quantities are whole numbers.",
    "A quick sanity check on the size of the numbers: they stay in the hundreds, which seems plausible.",
    "Hmm, wait, I need to be careful that I read the right day from the list.",
    "Maybe it is cleaner to think of each day as a change to the running total.",
)


@dataclass(frozen=True, slots=True)
class LongThinkTrace:
    """A synthetic trace: ``completion`` ends with ``The answer is \\boxed{answer}.``"""

    question: str
    completion: str
    answer: int

    def row(self, trace_id: str = "long-think") -> dict[str, str]:
        """A JSONL row as ``score --input`` and ``build`` read it."""
        return {
            "id": trace_id,
            "question": self.question,
            "completion": self.completion,
            "reference_answer": str(self.answer),
        }


def _day_sentences(rng: random.Random, day: int, total: int, item: str) -> tuple[list[str], int]:
    """Sentences that move the running total through one day's arrivals and orders."""
    arriving, leaving = rng.randint(12, 60), rng.randint(5, 40)
    after_arrivals = total + arriving
    after = after_arrivals - leaving
    sentences = [
        f"On day {day} a truck brings {arriving} more {item}, so the stock goes from {total} to "
        f"{total} + {arriving} = {after_arrivals}.",
        f"Then {leaving} {item} are shipped out to customers, which leaves {after_arrivals} - {leaving} = "
        f"{after}.",
    ]
    if rng.random() < 0.35:
        sentences.append(
            f"Let me double-check that: {after} + {leaving} = {after_arrivals} and {after_arrivals} - "
            f"{arriving} = {total}, yes, it is consistent."
        )
    if rng.random() < 0.3:
        sentences.append(rng.choice(_ASIDES))
    return sentences, after


def _token_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer([text], add_special_tokens=False)["input_ids"][0])


def long_think_trace(tokenizer: Any, target_tokens: int = 16_000, seed: int = 0) -> LongThinkTrace:
    """The trace behind :func:`long_think_completion` (with its question and answer)."""
    rng = random.Random(seed)
    item = rng.choice(_ITEMS)
    start = rng.randint(150, 400)
    question = (
        f"A warehouse holds {start} {item} at the start of the month. Every day a truck brings more {item} "
        f"and some are shipped out to customers, as listed in the delivery log. How many {item} are in the "
        "warehouse at the end of the log?"
    )
    opening = (
        f"Okay, so the warehouse starts with {start} {item}. I need to go through the log day by day, add "
        "what arrives and subtract what is shipped. Let me keep a running total."
    )
    pieces: list[str] = [opening]
    budget = target_tokens - 60  # the tags, the closing sentence and the answer part
    used = _token_count(tokenizer, opening)
    total, day = start, 0
    while used < budget:
        # a one-line paragraph (one step) or a long run of sentences on one line (split at sentences)
        long_run = rng.random() < 0.15 and budget - used > 2_000  # a run near the end would overshoot
        days = rng.randint(8, 16) if long_run else rng.randint(1, 2)
        sentences: list[str] = []
        for _ in range(days):
            day += 1
            day_sentences, total = _day_sentences(rng, day, total, item)
            sentences.extend(day_sentences)
        piece = " ".join(sentences)
        pieces.append(piece)
        used += _token_count(tokenizer, piece) + 1
    pieces.append(f"So after day {day} the warehouse holds {total} {item}.")
    body = "\n\n".join(pieces)
    completion = (
        f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}\n\n"
        f"Going through the log day by day, the stock ends at {total} {item}.\n\n"
        f"The answer is \\boxed{{{total}}}."
    )
    return LongThinkTrace(question, completion, total)


def long_think_completion(tokenizer: Any, target_tokens: int = 16_000, seed: int = 0) -> str:
    """A deterministic ``<think>`` prose completion of about ``target_tokens`` tokens (see the module doc)."""
    return long_think_trace(tokenizer, target_tokens, seed).completion


# ----------------------------------------------------------------------------------------------------------
# tiny long-context models
# ----------------------------------------------------------------------------------------------------------


def smollm2_folder() -> Path:
    """The prepared SmolLM2 folder (converted once from the shipped GGUF when missing)."""
    from mig_annotator.engine.model_store import resolve_model_path

    return resolve_model_path(None)


def tiny_long_context_model(
    folder: Path,
    max_position_embeddings: int = 32_768,
    *,
    architecture: Architecture = "llama",
    rope_parameters: dict[str, Any] | None = None,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
) -> Path:
    """Save a small random-initialised causal LM with SmolLM2's tokenizer into ``folder``; returns it.

    ``rope_parameters`` (transformers 5's name for ``rope_scaling``, e.g. :data:`ROPE_LINEAR`) defaults to
    plain RoPE. The weights depend only on the arguments (``seed``): the same call saves the same model.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    source = smollm2_folder()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    shape: dict[str, Any] = {
        "vocab_size": 49_152,  # SmolLM2's tokenizer
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "rope_parameters": rope_parameters or {"rope_type": "default", "rope_theta": 100000.0},
    }
    if architecture == "llama":
        config = LlamaConfig(**shape)
    else:
        config = Qwen2Config(**shape, use_sliding_window=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    return folder
