"""The ``vllm`` probe: vLLM's engine in this process (``vllm.LLM``), for offline builds on a GPU box.

Probes are ``TokensPrompt``s scored with ``SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)``
or, on a prefix-reusing path, the fields :func:`engine.probe.vllm_common.sampling_fields` gives. On the
prefix-reusing paths the longest probe of every trace runs first (one ``generate`` call for all traces), the
other probes after it, and a probe whose answer rows came from the cache (``num_cached_tokens``) is re-run
with the cache off. ``auto`` picks the fastest path that this vLLM build accepts.
Traces that share their question prompt score probe 0 once per group (``group_prefixes``,
:func:`engine.probe.vllm_common.plan_requests`).

A vision-language model folder (its config holds a ``vision_config``, and vLLM serves the architecture) reads
a question's images: the probe loads the folder's Hugging Face processor, which lays out the probe's tokens,
and each probe is a ``TokensPrompt`` with the images unexpanded in its header and the decoded images as
``multi_modal_data`` (:mod:`engine.probe.vllm_common`). A text-only folder has no processor, and the engine
refuses an image question for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from mig_annotator.engine.probe.base import LocalModelProbe, ProbeError, ProbeResult
from mig_annotator.engine.probe.settings import VLLMProbeSettings
from mig_annotator.engine.probe.vision_folder import is_vision_language_folder, load_image_processor
from mig_annotator.engine.probe.vllm_common import (
    TRIAL_TOLERANCE,
    ProbeRequest,
    ResultCollector,
    ScoringPath,
    answer_logprobs_from_prompt_logprobs,
    answer_logprobs_from_token_scores,
    check_engine_prompt,
    choose_path,
    plan_requests,
    sampling_fields,
    trial_requests,
)
from mig_annotator.engine.prompt import ProbeSequence

logger = logging.getLogger(__name__)


class VLLMProbe(LocalModelProbe[VLLMProbeSettings]):
    """A :class:`engine.probe.base.Probe` running ``vllm.LLM`` in this process."""

    backend = "vllm"

    def __init__(self, settings: VLLMProbeSettings) -> None:
        super().__init__(settings)
        from vllm import LLM

        arguments: dict[str, Any] = {
            "model": str(self._model_path),
            "dtype": settings.dtype,
            "enforce_eager": settings.enforce_eager,
            "enable_prefix_caching": True,
            "gpu_memory_utilization": settings.gpu_memory_utilization,
        }
        if settings.max_model_len is not None:
            arguments["max_model_len"] = settings.max_model_len
        if settings.block_size is not None:
            arguments["block_size"] = settings.block_size
        self._llm = LLM(**{**arguments, **settings.engine_args})
        self._tokenizer = self._llm.get_tokenizer()
        self._processor = (
            load_image_processor(self._model_path) if is_vision_language_folder(self._model_path) else None
        )
        self._context_limit = int(self._llm.llm_engine.model_config.max_model_len)
        self._path = choose_path(settings.vllm_path, self._path_problem, f"vllm {self._model_path.name}")
        logger.info("vllm probe: %s, path %s", self._model_path, self._path)

    @property
    def scoring_path(self) -> ScoringPath:
        return self._path

    @property
    def shares_group_prefixes(self) -> bool:
        return self._settings.group_prefixes

    @property
    def processor(self) -> Any | None:
        """The model folder's processor when it is a vision-language model (None: text only)."""
        return self._processor

    def _score_sequences(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        plan = plan_requests(sequences, group_prefixes=self._settings.group_prefixes)
        collector = ResultCollector(sequences, plan.groups)
        if self._path == "prompt-logprobs":
            self._run_into(plan.all(), self._path, collector, use_cache=False)
        else:  # longest probes first: they fill the prefix cache for the rest
            first, rest = plan.waves()
            self._run_into(first, self._path, collector, use_cache=True)
            self._run_into(rest, self._path, collector, use_cache=True)
        if collector.missing():
            raise ProbeError(f"vLLM returned no scores for sequences {collector.missing()}")
        self._record_forward()
        return [ProbeResult(out, n) for out, n in zip(collector.outputs, collector.forwarded, strict=True)]

    def close(self) -> None:
        engine_core = getattr(getattr(self._llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()

    def _run_into(
        self, batch: list[ProbeRequest], path: ScoringPath, collector: ResultCollector, *, use_cache: bool
    ) -> None:
        if not batch:
            return
        redo = []
        for request, (logprobs, cached) in zip(batch, self._generate(batch, path, use_cache), strict=True):
            if logprobs is None:  # the cache covered an answer row: recompute it without the cache
                redo.append(request)
                collector.forwarded[request.item] += len(request.prompt) - cached
                continue
            collector.put(request, logprobs, len(request.prompt) - cached)
        if redo:
            self._run_into(redo, path, collector, use_cache=False)

    def _generate(
        self, batch: list[ProbeRequest], path: ScoringPath, use_cache: bool
    ) -> list[tuple[np.ndarray | None, int]]:
        """Per probe: the answer log-probs (None when the prefix cache covered an answer row) and the
        prompt tokens that came from the cache."""
        from vllm import SamplingParams, TokensPrompt
        from vllm.exceptions import VLLMError

        images = _DecodedImages()
        prompts = [images.prompt(request, TokensPrompt) for request in batch]
        try:
            params = [
                SamplingParams(**sampling_fields(path, request, use_cache=use_cache)) for request in batch
            ]
            outputs = self._llm.generate(prompts, params, use_tqdm=False)
        except (VLLMError, ValueError, RuntimeError) as error:
            raise ProbeError(f"vLLM failed on {len(batch)} probes: {error}") from error
        results = []
        for request, output in zip(batch, outputs, strict=True):
            check_engine_prompt(request, output.prompt_token_ids)
            cached = int(output.num_cached_tokens or 0)
            if not request.cache_is_safe(cached):
                results.append((None, cached))
                continue
            if path == "token-scores":
                logprobs = answer_logprobs_from_token_scores(request, output.prompt_token_id_logprobs)
            else:
                logprobs = answer_logprobs_from_prompt_logprobs(request, output.prompt_logprobs)
            results.append((logprobs, cached))
        return results

    def _path_problem(self, path: ScoringPath) -> str | None:
        """Why ``path`` cannot run on this engine, or None when a trial probe that hits the prefix cache gave
        the same numbers as without the cache (:func:`engine.probe.vllm_common.trial_requests`)."""
        fill, probe = trial_requests(self._tokenizer, self._context_limit)
        if path == "prompt-logprobs":
            self._generate([probe], path, use_cache=False)
            return None
        self._generate([fill], path, use_cache=True)
        ((cached_scores, cached),) = self._generate([probe], path, use_cache=True)
        ((fresh_scores, _),) = self._generate([probe], path, use_cache=False)
        if cached == 0:
            return "the prefix cache gave no hit"
        if cached_scores is None or fresh_scores is None:
            return "the trial probe's answer rows came from the prefix cache"
        difference = float(np.abs(cached_scores - fresh_scores).max())
        if difference > TRIAL_TOLERANCE:
            return f"scores with the prefix cache differ from those without by {difference:.2g} nats"
        return None


class _DecodedImages:
    """The token prompts of one ``generate`` call, each image decoded once (Pillow, RGB) for its probes."""

    def __init__(self) -> None:
        self._decoded: dict[str, Any] = {}

    def prompt(self, request: ProbeRequest, tokens_prompt: Any) -> Any:
        """``request`` as a ``vllm.TokensPrompt``: with its images unexpanded and as multimodal data, each
        keyed by its sha256 (vLLM's multimodal uuid)."""
        if request.vision is None:
            return tokens_prompt(prompt_token_ids=request.prompt)
        images = request.vision.images
        return tokens_prompt(
            prompt_token_ids=request.engine_prompt,
            multi_modal_data={"image": [self._image(image.sha256, image.data) for image in images]},
            multi_modal_uuids={"image": [image.sha256 for image in images]},
        )

    def _image(self, sha256: str, data: bytes) -> Any:
        if sha256 not in self._decoded:
            import io

            from PIL import Image

            with Image.open(io.BytesIO(data)) as image:
                self._decoded[sha256] = image.convert("RGB")
        return self._decoded[sha256]
