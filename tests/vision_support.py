"""Vision test support: CLEVR-like scenes drawn with Pillow and tiny random-initialised vision-language model
folders built from their configs (no download), loadable with ``--model FOLDER``.

* :func:`clevr_scene`: a PNG of coloured circles, squares and triangles on a grey floor (by seed).
* :func:`tiny_vlm`: a 2-layer vision-language model of a family (``idefics3``: SmolVLM-shaped, a SigLIP
  encoder, pixel-shuffle connector and Llama text model; ``llava``: a CLIP encoder, MLP projector and Llama
  text model) with SmolLM2's tokenizer plus the family's image tokens, its processor saved beside it. Its
  numbers mean nothing; it exercises the plumbing cheaply on CPU.
* :func:`image_question`: a question as chat messages with one image part (base64 or a path) and text.
"""

from __future__ import annotations

import base64
import io
import random
from typing import Any, Literal

Family = Literal["idefics3", "llava"]
FAMILIES: tuple[Family, ...] = ("idefics3", "llava")
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
