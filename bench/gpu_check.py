"""GPU check: the transformers probe's ``packed`` vs ``packed-single`` vs ``naive`` paths on CUDA in bf16.

A randomly initialised model of a realistic shape (Llama-3.2-1B's config, written inline) with the SmolLM2
tokenizer (bench/assets/smollm2-tokenizer), on synthetic GSM8K-like traces and on bench/engine_speed.py's long
32-step trace. Per mode: traces/s, tokens forwarded, real tokens/s, and the achieved TFLOP/s against the
card's dense bf16 matmul peak. Run by ``bench/gpu_check.sh`` (one device call); results go to ``--out``.

    python bench/gpu_check.py --out bench/out/gpu-check           # on a GPU box
    python bench/gpu_check.py --smoke --out /tmp/gpu-smoke        # tiny model on the CPU: checks the code

FLOPs counted ("model FLOPs", what the path must compute, not what masked kernels spend):
2 x (non-embedding parameters) per real token forwarded, plus causal attention (QK^T and PV, 4 x d_attn per
visible query-key pair per layer, the pairs each path's mask allows), plus the LM head on the answer rows
only. Padding is excluded. Peaks (dense bf16, no sparsity): H100 SXM 989 TFLOP/s, H100 PCIe 756, H200 989.

Scoring's share of a GRPO step (``grpo_share`` in results.json, a line in results.md): on the same model, the
``packed`` probe scores one GRPO batch (``--grpo-questions`` x ``--grpo-group`` synthetic GSM8K completions;
the default 8 x 8 = 64, smoke 2 x 4) against one training step over the same batch, the policy's forward and
backward over each completion's question + steps tokens (bf16; fp32 in --smoke; micro-batches of
``--forward-batch-tokens`` padded tokens, no optimizer update, generation not counted). The fraction is
scoring seconds over training-step seconds: what the method adds to the step's gradient work (an upper bound
on its share of a whole step, which also generates).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOKENIZER_DIR = ROOT / "bench" / "assets" / "smollm2-tokenizer"
MODES = ("naive", "packed-single", "packed")
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), matched on the device name.
PEAKS_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))

# meta-llama/Llama-3.2-1B config.json (the shape; weights are random). Vocabulary kept at 128256 although
# the SmolLM2 tokenizer uses ids < 49152: the LM head runs on answer rows only, so it barely matters.
LLAMA_3_2_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "tie_word_embeddings": True,
    "hidden_act": "silu",
}
TINY = {
    **LLAMA_3_2_1B,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 49152,
}

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kofi", "Lena"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "coins", "books", "shells"]


def synthetic_gsm8k(count: int, seed: int = 0) -> list[tuple[str, list[str], str]]:
    """GSM8K-like traces: a ~240-character question, 2-12 arithmetic steps of ~60-90 characters (the shared
    rollouts average 4.4 steps of 63 characters; a wider spread here), answer ``A: N``."""
    rng = random.Random(seed)
    traces = []
    for _ in range(count):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        total = rng.randint(5, 90)
        question = (
            f"{name} has {total} {item}. Over the week {name} trades some {item} with friends at school, "
            f"buys a few packs at the market on the way home, and gives part of the collection to a younger "
            f"sibling. After all of these changes, how many {item} does {name} have left at the end?"
        )
        steps = []
        for _ in range(rng.randint(2, 12)):
            change = rng.randint(1, 40)
            if rng.random() < 0.5 or total <= change:
                steps.append(
                    f"{name} buys {change} more {item}, so {total} + {change} = "
                    f"<<{total}+{change}={total + change}>>{total + change} {item}."
                )
                total += change
            else:
                steps.append(
                    f"{name} gives away {change} {item}, so {total} - {change} = "
                    f"<<{total}-{change}={total - change}>>{total - change} {item}."
                )
                total -= change
        steps.append(f"A: {total}")
        traces.append((question, steps, str(total)))
    return traces


def long_traces(count: int) -> list[tuple[str, list[str], str]]:
    from engine_speed import long_trace  # bench/engine_speed.py: 32 steps of ~130 tokens

    trace = long_trace()[0]
    assert trace.steps is not None
    return [(trace.question, list(trace.steps), trace.reference_answer)] * count


def write_model(folder: Path, shape: dict, device: str) -> int:
    """A randomly initialised bf16 Llama of ``shape`` plus the SmolLM2 tokenizer in ``folder``; returns the
    non-embedding parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    # SmolLM2's special-token ids (<|endoftext|> 0, <|im_start|> 1, <|im_end|> 2)
    config = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    for file in TOKENIZER_DIR.iterdir():
        shutil.copy(file, folder / file.name)
    layers = sum(p.numel() for p in model.model.layers.parameters()) + model.model.norm.weight.numel()
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return layers


def attention_pairs(sequence, mode: str) -> int:
    """Query-key pairs the mode's mask allows for one trace (causal, per head)."""
    continuation = len(sequence.continuation_ids)
    if mode == "naive":
        return sum((b + continuation) * (b + continuation + 1) // 2 for b in sequence.boundaries)
    trace = len(sequence.trace_ids)
    copies = sum(continuation * b + continuation * (continuation + 1) // 2 for b in sequence.boundaries)
    return trace * (trace + 1) // 2 + copies


def model_flops(sequences, mode: str, shape: dict, layer_params: int) -> float:
    tokens = sum(s.naive_tokens if mode == "naive" else s.minimal_tokens for s in sequences)
    d_attn = shape["num_attention_heads"] * shape["head_dim"]
    pairs = sum(attention_pairs(s, mode) for s in sequences)
    answer_rows = sum(s.n_prefixes * s.n_answer_tokens for s in sequences)
    return (
        2.0 * layer_params * tokens
        + 4.0 * d_attn * pairs * shape["num_hidden_layers"]
        + 2.0 * shape["hidden_size"] * shape["vocab_size"] * answer_rows
    )


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_mode(mode: str, model_dir: Path, workloads: dict, args: argparse.Namespace, deadline: float) -> dict:
    import torch

    from mig_annotator.engine.probe.settings import TransformersProbeSettings
    from mig_annotator.engine.probe.transformers_probe import TransformersProbe

    settings = TransformersProbeSettings(
        model=str(model_dir),
        mode=mode,
        dtype="bfloat16",
        device=args.device,
        forward_batch_tokens=args.forward_batch_tokens,
    )
    probe = TransformersProbe(settings)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    results: dict = {"mode": mode, "workloads": {}}
    for name, sequences in workloads.items():
        if time.monotonic() > deadline:
            results["workloads"][name] = {"skipped": "time budget spent"}
            continue
        probe.score(sequences[: min(8, len(sequences))])  # warm-up: kernels, allocator
        synchronize(args.device)
        stats = probe.stats
        before = (stats.tokens_forwarded, stats.tokens_padded, stats.seconds, stats.forward_calls)
        started = time.perf_counter()
        scored = probe.score(sequences)
        synchronize(args.device)
        wall = time.perf_counter() - started
        real = stats.tokens_forwarded - before[0]
        padded = stats.tokens_padded - before[1]
        results["workloads"][name] = {
            "traces": len(sequences),
            "seconds": wall,
            "probe_seconds": stats.seconds - before[2],
            "forward_calls": stats.forward_calls - before[3],
            "tokens_real": real,
            "tokens_padded": padded,
            "tokens_minimal": sum(s.minimal_tokens for s in sequences),
            "tokens_naive": sum(s.naive_tokens for s in sequences),
            "model_flops": model_flops(sequences, mode, args.shape, args.layer_params),
            "logprobs": [r.token_logprobs.tolist() for r in scored],
        }
    if args.device.startswith("cuda"):
        results["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if "packed" in mode and time.monotonic() < deadline:
        results["plain_tokens_per_s"] = plain_rate(probe, workloads["gsm8k"], args.device)
    del probe
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return results


def plain_rate(probe, sequences, device: str) -> float:
    """Tokens/s of the backbone alone (built-in causal SDPA kernel) over equal-length rows of the packed
    rows' mean length, as many tokens as packed forwards: the ceiling for this many tokens."""
    budget = probe.settings.forward_batch_tokens
    rows = [len(s.trace_ids) + s.n_prefixes * len(s.continuation_ids) for s in sequences]
    width = max(16, sum(rows) // len(rows))
    per_batch = max(1, budget // width)
    batches = max(1, sum(rows) // (per_batch * width))
    batch = [[(i * 7 + j) % 1000 + 10 for j in range(width)] for i in range(per_batch)]
    probe.plain_forward(batch)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    for _ in range(batches):
        probe.plain_forward(batch)
    synchronize(device)
    return batches * per_batch * width / (time.perf_counter() - started)


def peak_tflops(device_name: str) -> float | None:
    for key, peak in PEAKS_TFLOPS:
        if key in device_name:
            return peak
    return None


def max_difference(first: list, second: list) -> float:
    import numpy as np

    return max(float(np.abs(np.subtract(a, b)).max()) for a, b in zip(first, second, strict=True))


def table(results: list[dict], peak: float | None) -> str:
    lines = [
        "| workload | mode | traces | traces/s | speed-up vs naive | tokens forwarded | forwarded/minimal "
        "| real tok/s | model TFLOP/s | % of peak | max abs diff vs naive (nats) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    naive = next((r for r in results if r["mode"] == "naive"), None)
    for r in results:
        for name, w in r["workloads"].items():
            if "skipped" in w:
                lines.append(f"| {name} | {r['mode']} | - | skipped: {w['skipped']} | | | | | | | |")
                continue
            rate = w["traces"] / w["seconds"]
            base = None if naive is None else naive["workloads"].get(name)
            speedup = (
                f"{rate / (base['traces'] / base['seconds']):.2f}x" if base and "seconds" in base else "-"
            )
            diff = "-"
            if base and "logprobs" in base and r["mode"] != "naive":
                diff = f"{max_difference(w['logprobs'], base['logprobs']):.3g}"
            forwarded = w["tokens_real"] + w["tokens_padded"]
            tflops = w["model_flops"] / w["probe_seconds"] / 1e12
            lines.append(
                f"| {name} | {r['mode']} | {w['traces']} | {rate:.1f} | {speedup} | {forwarded} "
                f"| {forwarded / w['tokens_minimal']:.2f} | {w['tokens_real'] / w['probe_seconds']:.0f} "
                f"| {tflops:.1f} | {f'{100 * tflops / peak:.1f}%' if peak else '-'} | {diff} |"
            )
    return "\n".join(lines)


def grpo_share(model_dir: Path, workload: list, texts: list[str], args: argparse.Namespace) -> dict:
    """Seconds to score ``workload`` (one GRPO batch) with the packed probe against one forward+backward
    training step of the policy over the batch's ``texts``, on the same model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mig_annotator.engine.probe.settings import TransformersProbeSettings
    from mig_annotator.engine.probe.transformers_probe import TransformersProbe

    settings = TransformersProbeSettings(
        model=str(model_dir),
        mode="packed",
        dtype="bfloat16",
        device=args.device,
        forward_batch_tokens=args.forward_batch_tokens,
    )
    probe = TransformersProbe(settings)
    probe.score(workload[: min(8, len(workload))])  # warm-up
    synchronize(args.device)
    started = time.perf_counter()
    probe.score(workload)
    synchronize(args.device)
    scoring = time.perf_counter() - started
    del probe
    gc.collect()

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # bf16 on the GPU; the CPU smoke check trains in fp32 (a CPU's bf16 backward is a slow fallback matmul)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(args.device).train()
    rows = [tokenizer(text).input_ids for text in texts]
    per_batch = max(1, args.forward_batch_tokens // max(len(row) for row in rows))
    batches = [rows[i : i + per_batch] for i in range(0, len(rows), per_batch)]

    def step(policy: Any) -> None:
        for batch in batches:
            width = max(len(row) for row in batch)
            ids = torch.tensor([row + [0] * (width - len(row)) for row in batch], device=args.device)
            mask = (torch.arange(width)[None, :] < torch.tensor([len(row) for row in batch])[:, None]).long()
            mask = mask.to(args.device)
            labels = ids.masked_fill(mask == 0, -100)
            policy(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        policy.zero_grad(set_to_none=True)

    step(model)  # warm-up
    synchronize(args.device)
    started = time.perf_counter()
    step(model)
    synchronize(args.device)
    training = time.perf_counter() - started
    del model
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "completions": len(workload),
        "questions": args.grpo_questions,
        "group": args.grpo_group,
        "policy_tokens": sum(len(row) for row in rows),
        "probe_tokens_minimal": sum(s.minimal_tokens for s in workload),
        "scoring_s": scoring,
        "train_step_s": training,
        "scoring_over_train_step": scoring / training,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json and results.md")
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, few traces")
    parser.add_argument("--traces", type=int, default=512, help="synthetic GSM8K-like traces")
    parser.add_argument("--long", type=int, default=16, help="copies of the long 32-step trace")
    parser.add_argument("--forward-batch-tokens", type=int, default=32768)
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting new runs after this")
    parser.add_argument("--grpo-questions", type=int, default=8, help="questions in the GRPO batch")
    parser.add_argument("--grpo-group", type=int, default=8, help="completions per question")
    args = parser.parse_args()
    started = time.monotonic()
    deadline = started + args.budget_s

    import torch
    import transformers

    if args.smoke:
        args.device, args.shape = "cpu", TINY
        args.traces, args.long, args.forward_batch_tokens = min(args.traces, 12), min(args.long, 1), 4096
        args.grpo_questions, args.grpo_group = min(args.grpo_questions, 2), min(args.grpo_group, 4)
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run with --smoke for the CPU check")
        args.device, args.shape = "cuda", LLAMA_3_2_1B
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"
    peak = peak_tflops(device_name) if args.device == "cuda" else None
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device_name,
        "peak_bf16_dense_tflops": peak,
        "shape": "tiny (smoke)" if args.smoke else "Llama-3.2-1B (random weights)",
        "traces": args.traces,
        "long_traces": args.long,
        "forward_batch_tokens": args.forward_batch_tokens,
    }
    print(json.dumps(env), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)

    from mig_annotator.engine.prompt import PromptBuilder
    from mig_annotator.schemas import ScoringConfig

    with tempfile.TemporaryDirectory(prefix="gpu-check-model-") as folder:
        model_dir = Path(folder)
        args.layer_params = write_model(model_dir, args.shape, args.device)
        env["non_embedding_params"] = args.layer_params
        env["model_write_s"] = time.monotonic() - started
        from transformers import AutoTokenizer

        builder = PromptBuilder(AutoTokenizer.from_pretrained(model_dir), ScoringConfig().prompt)
        workloads = {
            name: [builder.build(q, steps, a) for q, steps, a in traces]
            for name, traces in (("gsm8k", synthetic_gsm8k(args.traces)), ("long", long_traces(args.long)))
        }
        results = []
        for mode in MODES:
            mode_started = time.monotonic()
            results.append(run_mode(mode, model_dir, workloads, args, deadline))
            results[-1]["mode_wall_s"] = time.monotonic() - mode_started
            print(json.dumps({k: v for k, v in results[-1].items() if k != "workloads"}), flush=True)
        share = None
        if time.monotonic() < deadline:
            batch = synthetic_gsm8k(args.grpo_questions * args.grpo_group, seed=1)
            texts = [q + "\n" + "\n".join(steps) for q, steps, _ in batch]
            grpo_batch = [builder.build(q, steps, a) for q, steps, a in batch]
            share = grpo_share(model_dir, grpo_batch, texts, args)
            print(json.dumps({"grpo_share": share}), flush=True)
    markdown = table(results, peak)
    env["total_s"] = time.monotonic() - started
    for r in results:  # the log-probs were for the agreement column only
        for w in r["workloads"].values():
            w.pop("logprobs", None)
    (args.out / "results.json").write_text(
        json.dumps({"env": env, "results": results, "grpo_share": share}, indent=2)
    )
    header = (
        f"{env['device']}, torch {env['torch']}, transformers {env['transformers']}, bf16, "
        f"{env['shape']}, {env['non_embedding_params'] / 1e9:.3f}B non-embedding parameters, "
        f"forward_batch_tokens {args.forward_batch_tokens}; peak {peak or '-'} TFLOP/s dense bf16."
    )
    plain = [f"{r['mode']}: {r['plain_tokens_per_s']:.0f}" for r in results if "plain_tokens_per_s" in r]
    footer = f"Plain causal forward of the backbone, same token count (tok/s): {', '.join(plain) or '-'}."
    if share is not None:
        footer += (
            f"\n\nGRPO batch of {share['completions']} completions "
            f"({share['questions']} x {share['group']}): "
            f"MIG scoring {share['scoring_s']:.3f} s, one training step (forward+backward) "
            f"{share['train_step_s']:.3f} s: scoring = {share['scoring_over_train_step']:.2f} x the step."
        )
    (args.out / "results.md").write_text(f"{header}\n\n{markdown}\n\n{footer}\n")
    print(header, markdown, footer, sep="\n\n")


if __name__ == "__main__":
    main()
