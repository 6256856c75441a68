"""Probe prompts, tokenised piece by piece so that every prefix shares its tokens with the next.

For a trace with steps s_1..s_K the probe reads, for every k = 0..K::

    header(question) + step(s_1) + ... + step(s_k) + answer_prefix + reference_answer

and scores only the reference answer's tokens. The default template renders as::

    Question: <question>
    Answer: Let's think step by step.
    <s_1>
    ...
    <s_k>
    Therefore, the final answer is: <answer>

Each piece (header, each step) is tokenised on its own and the ids are concatenated, so the ids of
prefix k are an exact prefix of those of prefix k+1 and the trace is forwarded once. The
continuation (answer prefix + answer) is tokenised as lm-evaluation-harness does: whitespace that
ends the answer prefix moves to the start of the answer, the pair is tokenised whole, and the answer
tokens are what follows the answer prefix's own tokens. They are the same for every k.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mig_annotator.schemas.config import PromptTemplate
from mig_annotator.schemas.probe_cost import forwarded_tokens
from mig_annotator.schemas.trace_images import TraceImage


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer the prompt builder uses."""

    bos_token_id: int | None

    def __call__(self, text: list[str], add_special_tokens: bool = ...) -> dict: ...

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: object) -> str: ...


@dataclass(frozen=True, slots=True)
class VisionPrefix:
    """The images of a trace's question header, as the probe's processor prepared them.

    The header (``trace_ids[:boundaries[0]]``) holds ``image_token_id`` once per image feature, in order;
    ``pixel_inputs`` (``pixel_values`` and the like, numpy) go to the vision encoder, whose features take
    those positions. ``key`` (the images' sha256s) tells two prefixes apart whose placeholder ids are equal.
    ``images`` (the encoded files) and ``unexpanded_header_ids`` (the header's ids with one image token per
    image, before the processor expanded them) are what vLLM takes: it expands each image's token itself,
    so a vLLM probe sends ``unexpanded_header_ids`` in place of the expanded header
    (:mod:`engine.probe.vllm_common`).
    """

    key: str
    image_token_id: int
    pixel_inputs: dict[str, Any] = field(compare=False, repr=False)
    images: tuple[TraceImage, ...] = field(default=(), compare=False, repr=False)
    unexpanded_header_ids: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @property
    def n_images(self) -> int:
        return len(self.key.split(","))


@dataclass(frozen=True, slots=True)
class ProbeSequence:
    """The tokenised probe inputs of one trace.

    ``trace_ids[:boundaries[k]]`` is prefix k (question and the first k steps); the probe for k
    reads it followed by ``continuation_ids``, whose last ``n_answer_tokens`` ids are scored. ``vision``:
    the question's images (their placeholder tokens are in the header), None for a text-only question.
    """

    trace_ids: tuple[int, ...]
    boundaries: tuple[int, ...]
    continuation_ids: tuple[int, ...]
    n_answer_tokens: int
    vision: VisionPrefix | None = None

    @property
    def n_prefixes(self) -> int:
        return len(self.boundaries)

    @property
    def probe_length(self) -> int:
        """Tokens in the longest probe (all steps): what must fit the model's context."""
        return self.boundaries[-1] + len(self.continuation_ids)

    @property
    def minimal_tokens(self) -> int:
        """The least any exact method must forward: the trace once plus every continuation."""
        return forwarded_tokens(self.boundaries[-1], self.n_prefixes, len(self.continuation_ids))

    @property
    def naive_tokens(self) -> int:
        """Tokens forwarded by one independent pass per prefix."""
        return sum(self.boundaries) + self.n_prefixes * len(self.continuation_ids)

    def probe_ids(self, k: int) -> tuple[int, ...]:
        return self.trace_ids[: self.boundaries[k]] + self.continuation_ids

    def truncated(self, n_steps: int) -> ProbeSequence:
        """The same probes for the first ``n_steps`` steps only."""
        end = self.boundaries[n_steps]
        return ProbeSequence(
            self.trace_ids[:end],
            self.boundaries[: n_steps + 1],
            self.continuation_ids,
            self.n_answer_tokens,
            self.vision,
        )


class PromptBuilder:
    """Renders and tokenises probe prompts for one tokenizer and template.

    ``processor``: a vision-language probe's Hugging Face processor. A question's images then go in its
    header: one ``processor.image_token`` per image (or the processor's ``image_prompt`` holding it, where it
    has one: the vision start and end tokens around it), in order, before the question text (in chat mode,
    at the start of the user turn), which the processor expands into the image's feature placeholders.
    """

    def __init__(self, tokenizer: Tokenizer, template: PromptTemplate, processor: Any | None = None) -> None:
        self._tokenizer = tokenizer
        self._template = template
        self._processor = processor
        self._bos_ids = self._leading_special_ids(tokenizer)

    def header_text(self, question: str, n_images: int = 0) -> str:
        template = self._template
        if n_images:
            image_prompt = getattr(self._processor, "image_prompt", self._processor.image_token)
            question = image_prompt * n_images + question
        if not template.chat:
            return template.header.replace("{question}", question)
        user_message = template.chat_user_message.replace("{question}", question)
        return self._tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )

    def step_text(self, step: str) -> str:
        return self._template.step.replace("{step}", step)

    def build(
        self, question: str, steps: Sequence[str], answer: str, images: Sequence[TraceImage] = ()
    ) -> ProbeSequence:
        if images and self._processor is None:
            raise ImagesNotReadError("this probe reads text only, and the question holds images")
        answer_prefix, answer_text = split_trailing_whitespace(self._template.answer_prefix, answer)
        pieces = [self.header_text(question, len(images)), *(self.step_text(step) for step in steps)]
        encoded = self._tokenizer(
            [*pieces, answer_prefix, answer_prefix + answer_text], add_special_tokens=False
        )["input_ids"]
        piece_ids, prefix_ids, whole_ids = encoded[: len(pieces)], encoded[-2], encoded[-1]
        vision = None
        if images:
            unexpanded = (*self._bos_ids, *piece_ids[0])
            piece_ids[0], vision = self._vision_header(pieces[0], images, unexpanded)

        trace_ids = list(self._bos_ids) + [token for ids in piece_ids for token in ids]
        boundaries = [len(self._bos_ids)]
        for ids in piece_ids:
            boundaries.append(boundaries[-1] + len(ids))
        boundaries = boundaries[1:]

        if whole_ids[: len(prefix_ids)] == prefix_ids:
            answer_ids = whole_ids[len(prefix_ids) :]
        else:  # the answer prefix merges with the answer: keep its own tokens, tokenise the answer alone
            answer_ids = self._tokenizer([answer_text], add_special_tokens=False)["input_ids"][0]
        if not answer_ids:
            raise ValueError("reference_answer tokenises to no tokens")
        sequence = ProbeSequence(
            tuple(trace_ids), tuple(boundaries), tuple(prefix_ids + answer_ids), len(answer_ids), vision
        )
        _check_shared_prefixes(sequence)
        return sequence

    def _vision_header(
        self, header: str, images: Sequence[TraceImage], unexpanded_ids: tuple[int, ...]
    ) -> tuple[list[int], VisionPrefix]:
        """The header's ids with each image expanded by the processor, and the pixel inputs
        (``unexpanded_ids``: the header's own ids, with any BOS, one image token per image)."""
        pictures = [decoded_image(image, index) for index, image in enumerate(images)]
        prepared = self._processor(
            text=[header], images=[pictures], add_special_tokens=False, return_tensors="np"
        )
        ids = [int(token) for token in prepared["input_ids"][0]]
        pixel_inputs = {
            name: value for name, value in prepared.items() if name not in ("input_ids", "attention_mask")
        }
        token_id = int(self._processor.image_token_id)
        key = ",".join(image.sha256 for image in images)
        vision = VisionPrefix(
            key=key,
            image_token_id=token_id,
            pixel_inputs=pixel_inputs,
            images=tuple(images),
            unexpanded_header_ids=unexpanded_ids,
        )
        return ids, vision

    @staticmethod
    def _leading_special_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
        """The ids the tokenizer puts before text on its own (a BOS token, for many models)."""
        with_special = tokenizer(["a"], add_special_tokens=True)["input_ids"][0]
        plain = tokenizer(["a"], add_special_tokens=False)["input_ids"][0]
        if with_special[-len(plain) :] != plain:
            return ()
        return tuple(with_special[: len(with_special) - len(plain)])


class ImagesNotReadError(ValueError):
    """A question holds images and the probe model reads text only."""


class ImageDecodeError(ValueError):
    """One of a question's images cannot be decoded into pixels (its header read, its data did not)."""

    def __init__(self, index: int, problem: str) -> None:
        super().__init__(problem)
        self.index = index


def decoded_image(image: TraceImage, index: int) -> Any:
    """The RGB pixels of a question's image ``index``; :class:`ImageDecodeError` naming it when its data
    does not decode (truncated or corrupt pixel data behind a readable header)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image.data)) as opened:
            return opened.convert("RGB")
    except Exception as error:  # Pillow raises OSError, SyntaxError, struct.error... on corrupt data
        raise ImageDecodeError(
            index,
            f"the question's image {index + 1} ({image.format} {image.width}x{image.height}, sha256 "
            f"{image.sha256[:12]}...) does not decode into pixels: {type(error).__name__}: {error}",
        ) from None


def split_trailing_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """Move whitespace that ends ``context`` to the start of ``continuation`` (lm-evaluation-harness)."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + continuation


def _check_shared_prefixes(sequence: ProbeSequence) -> None:
    boundaries = sequence.boundaries
    if boundaries[0] < 1:
        raise ValueError("the prompt header tokenises to no tokens")
    if any(later <= earlier for earlier, later in itertools.pairwise(boundaries)):
        raise ValueError("a step tokenises to no tokens: prefixes must grow with every step")
    if boundaries[-1] != len(sequence.trace_ids):
        raise AssertionError("the last prefix must be the whole trace")
