"""The tiny policy: a character-level Llama (well under 1M parameters) pre-trained here by SFT.

Prompt format (plain, also the tokenizer's chat template, so TRL's conversational prompts render the same)::

    Q: 3 7 5 2\\n         <- prompt (the chat template of a user turn; the generation prompt adds nothing)
    3<7 drop 3\\n...A: 7<eos> <- completion: one step per line, then the answer line

The probe reads the same layout through :data:`PROBE_TEMPLATE` (header ``Q: {question}\\n``, a step per
line, answer prefix ``A: ``). The tokenizer is a ``PreTrainedTokenizerFast`` over a ``tokenizers`` WordLevel
model with one token per character (printable ASCII and newline) plus ``<pad>``, ``<eos>``, ``<unk>``; no BOS.

    python experiments/mig_vs_grpo/policy.py pretrain --out outputs/mig_vs_grpo/sft
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import task  # the folder is package-free

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
CHARACTERS = "\n" + "".join(chr(code) for code in range(32, 127))
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}Q: {{ message['content'] }}\n"
    "{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
PROBE_TEMPLATE = {"header": "Q: {question}\n", "step": "{step}\n", "answer_prefix": "A: "}
MAX_NEW_TOKENS = 48


def prompt_text(question: str) -> str:
    return f"Q: {question}\n"


def build_tokenizer() -> Any:
    """The character-level tokenizer (a ``transformers.PreTrainedTokenizerFast``)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def build_model(tokenizer: Any, seed: int) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` of about 0.15M parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def _batch(tokenizer: Any, demos: list[task.Demonstration]) -> tuple[Any, Any, Any]:
    """Input ids, attention mask and labels (prompt tokens masked out) for teacher forcing."""
    import torch

    rows, label_rows = [], []
    for demo in demos:
        prompt = tokenizer.encode(prompt_text(demo.problem.question), add_special_tokens=False)
        completion = [*tokenizer.encode(demo.completion, add_special_tokens=False), tokenizer.eos_token_id]
        rows.append(prompt + completion)
        label_rows.append([-100] * len(prompt) + completion)
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    labels = torch.tensor([row + [-100] * (width - len(row)) for row in label_rows])
    return ids, mask, labels


def sample_completions(
    model: Any,
    tokenizer: Any,
    questions: list[str],
    *,
    sample: bool = False,
    batch_size: int = 128,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[str]:
    """Greedy completions, or samples at temperature 1 (as GRPO generates), in left-padded batches, on the
    model's device."""
    import torch

    tokenizer.padding_side = "left"
    out: list[str] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(questions), batch_size):
            prompts = [prompt_text(q) for q in questions[start : start + batch_size]]
            encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            encoded = encoded.to(model.device)
            generated = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                temperature=1.0 if sample else None,
                top_k=0 if sample else None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = generated[:, encoded["input_ids"].shape[1] :]
            out.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    tokenizer.padding_side = "right"
    return out


def accuracy(
    model: Any,
    tokenizer: Any,
    problems: list[task.Problem],
    *,
    sample: bool = False,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> float:
    """Share of ``problems`` answered right: greedy, or one sample each at temperature 1 (caller seeds)."""
    completions = sample_completions(
        model, tokenizer, [p.question for p in problems], sample=sample, max_new_tokens=max_new_tokens
    )
    right = sum(task.parse_answer(c) == p.answer for c, p in zip(completions, problems, strict=True))
    return right / len(problems)


def _sampled_accuracy(
    model: Any, tokenizer: Any, problems: list[task.Problem], seed: int, max_new_tokens: int
) -> float:
    import torch

    torch.manual_seed(seed)
    return accuracy(model, tokenizer, problems, sample=True, max_new_tokens=max_new_tokens)


def pretrain(
    out: Path,
    *,
    steps: int = 400,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    n_train: int = 4000,
    corrupted_share: float = 0.7,
    n_eval: int = 200,
    seed: int = 0,
    candidates: tuple[int, int] = (task.MIN_CANDIDATES, task.MAX_CANDIDATES),
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict[str, Any]:
    """SFT on a mix of correct and corrupted demonstrations of problems with ``candidates`` (min, max)
    digits; save the folder; return the measured figures (accuracy with ``max_new_tokens``)."""
    import torch

    torch.set_num_threads(1)
    random.seed(seed)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed)
    demos = task.demonstration_mix(task.problems("train", n_train, seed, candidates), corrupted_share, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * (1.0 - step / steps)
    )
    rng = random.Random(seed)
    started = time.perf_counter()
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        ids, mask, labels = _batch(tokenizer, rng.sample(demos, batch_size))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_value = float(loss.detach())
    train_s = time.perf_counter() - started
    held_out = task.problems("held_out", n_eval, 1000 + seed, candidates)
    figures = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "batch_size": batch_size,
        "corrupted_share": corrupted_share,
        "final_loss": round(loss_value, 4),
        "pretrain_s": round(train_s, 1),
        "held_out_accuracy_greedy": accuracy(model, tokenizer, held_out, max_new_tokens=max_new_tokens),
        "held_out_accuracy_sampled": _sampled_accuracy(model, tokenizer, held_out, seed, max_new_tokens),
        "n_eval": n_eval,
        "candidates": list(candidates),
        "max_new_tokens": max_new_tokens,
    }
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "pretrain_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("pretrain", help="SFT the tiny policy on imperfect demonstrations and save it")
    pre.add_argument("--out", type=Path, default=Path("outputs/mig_vs_grpo/sft"))
    pre.add_argument("--steps", type=int, default=400)
    pre.add_argument("--corrupted-share", type=float, default=0.7)
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument(
        "--candidates",
        type=int,
        nargs=2,
        default=[task.MIN_CANDIDATES, task.MAX_CANDIDATES],
        metavar=("MIN", "MAX"),
        help="digits per problem (4 5: the registered task)",
    )
    pre.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="for the accuracy figures")
    args = parser.parse_args(argv)
    figures = pretrain(
        args.out,
        steps=args.steps,
        corrupted_share=args.corrupted_share,
        seed=args.seed,
        candidates=tuple(args.candidates),
        max_new_tokens=args.max_new_tokens,
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
