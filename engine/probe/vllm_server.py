"""The ``vllm-server`` probe: a vLLM OpenAI-compatible server, over HTTP (async httpx).

* ``prompt-logprobs`` probes go to ``/v1/completions`` as token-id prompts, several per request, with
  ``max_tokens=1``, ``temperature=0``, ``prompt_logprobs=0``; only the answer positions are read.
* ``prefix-cached`` and ``token-scores`` probes go to ``/inference/v1/generate`` (the server runs with
  ``--enable-scale-out``), which takes vLLM's full ``SamplingParams``; ``prefix-cached`` also needs
  ``--enable-prompt-tokens-details`` so that every response says how many prompt tokens came from the
  cache. See :mod:`engine.probe.vllm_common` for the paths; ``auto`` picks the fastest the server offers.
* Traces that share their question prompt score probe 0 once per group (``group_prefixes``).
* A question's images (the probe's ``model`` folder is the served vision-language model's, with its
  processor): ``/v1/completions`` takes no images, so every probe with images goes to
  ``/inference/v1/generate`` on any path (the server needs ``--enable-scale-out``), its header unexpanded
  and the images as ``content_parts`` (``data:`` URLs, each with its sha256 as uuid); the server expands
  them, and the prompt it ran (``return_token_ids``) must be the probe's own token layout.
* A server in vLLM's dev mode (``VLLM_SERVER_DEV_MODE=1``: a trainer's own server, e.g. ``trl vllm-serve``)
  reports the version of its weights (``GET /weight_info``; a trainer sets it with
  ``/finish_weight_update`` or ``/update_weight_version`` after pushing weights). The identity names it;
  ``follow_weight_version`` reads it again around every scoring call, so each annotation names the weights
  that scored it and a call that straddled a weight update is scored again.

At start-up the probe reads the served model and ``max_model_len`` from ``/v1/models``, loads the same
tokenizer locally and compares it with the server's ``/tokenize`` (a mismatch refuses to run), and picks
the scoring path. Connection errors, timeouts, 429 and 5xx are retried with exponential backoff; when the
server stays unreachable :class:`VLLMServerUnavailable` says so (the service answers 503).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import os
import threading
from collections.abc import Awaitable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from mig_annotator.engine.probe.base import Probe, ProbeError, ProbeResult
from mig_annotator.engine.probe.server_pool import PoolSettings, ServerPool, ServersUnavailable
from mig_annotator.engine.probe.settings import VLLMServerProbeSettings, parse_base_urls
from mig_annotator.engine.probe.vision_folder import is_vision_language_folder, load_image_processor
from mig_annotator.engine.probe.vllm_common import (
    TOKENIZER_CHECK_TEXTS,
    TRIAL_TOLERANCE,
    ProbeRequest,
    ResultCollector,
    ScoringPath,
    answer_logprobs_from_prompt_logprobs,
    answer_logprobs_from_token_scores,
    check_engine_prompt,
    choose_path,
    image_data_urls,
    plan_requests,
    sampling_fields,
    trial_requests,
)
from mig_annotator.engine.prompt import ProbeSequence
from mig_annotator.schemas.probe import ProbeIdentity

logger = logging.getLogger(__name__)
T = TypeVar("T")
GENERATE_ROUTE = "/inference/v1/generate"
TRIAL_ATTEMPTS = 3
VERSION_ATTEMPTS = 3  # scoring calls retried when the served weights changed during one
WEIGHT_INFO_ROUTE = "/weight_info"
UNSET_WEIGHT_VERSION = "default"  # what vLLM reports before anyone set a version


class VLLMServerUnavailable(ProbeError):
    """The vLLM server cannot be reached or keeps failing (connection errors, timeouts, 429, 5xx)."""


class TokenizerMismatch(ProbeError):
    """The local tokenizer does not tokenise like the server's: the probe refuses to run."""


class VLLMServerProbe(Probe[VLLMServerProbeSettings]):
    """A :class:`engine.probe.base.Probe` backed by a running vLLM server."""

    backend = "vllm-server"
    remote = True

    def __init__(self, settings: VLLMServerProbeSettings) -> None:
        super().__init__(settings)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from mig_annotator.engine.model_store import resolve_model_path

        self._tokenizer_path = resolve_model_path(settings.model)
        headers = {}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._pool = ServerPool(
            parse_base_urls(settings.base_url),
            PoolSettings(
                timeout_s=settings.request_timeout_s,
                max_concurrency=settings.max_concurrency,
                max_retries=settings.max_retries,
                backoff_s=settings.backoff_s,
                headers=headers,
            ),
        )
        self._base_url = self._pool.describe()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-server-probe", daemon=True)
        self._thread.start()
        self.cache_fallbacks = 0  # probes re-run without the prefix cache
        self.version_retries = 0  # scoring calls run again because the served weights changed meanwhile
        try:
            self._served_model, self._served_root, self._context_limit = self._run(self._read_model())
            self._weight_version = self._run(self._served_weight_version())
            if settings.follow_weight_version and self._weight_version is None:
                raise ProbeError(
                    f"follow_weight_version: {self._base_url} does not report its weights' version "
                    f"(GET {WEIGHT_INFO_ROUTE}): start the server with VLLM_SERVER_DEV_MODE=1"
                )
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_path)
            self._processor = (
                load_image_processor(self._tokenizer_path)
                if is_vision_language_folder(self._tokenizer_path)
                else None
            )
            self._run(self._check_tokenizer())
            self._path = choose_path(
                settings.vllm_path,
                lambda path: self._run(self._path_problem(path)),
                self._base_url,
                fatal=(VLLMServerUnavailable,),
            )
        except BaseException:
            self.close()
            raise
        logger.info("vllm-server probe: %s at %s, path %s", self._served_model, self._base_url, self._path)

    # -- the Probe interface ------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return Path(self._served_model).name or self._served_model

    @property
    def scoring_path(self) -> ScoringPath:
        """The scoring path in use (``auto`` resolved at start-up)."""
        return self._path

    @property
    def shares_group_prefixes(self) -> bool:
        return self._settings.group_prefixes

    @property
    def processor(self) -> Any | None:
        """The local model folder's processor when it is a vision-language model (None: text only)."""
        return self._processor

    @property
    def weight_version(self) -> str | None:
        """The served weights' version as last read (None: the server does not report one)."""
        return self._weight_version

    def _score_sequences(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        return self._run(self._scored(sequences))

    async def ascore(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        """``score`` for async callers (runs on the probe's own event loop; no statistics kept)."""
        self.check_context(sequences)
        return await self._on_loop(self._scored(sequences))

    async def _scored(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        """The results, on one version of the served weights with ``follow_weight_version``."""
        if not self._settings.follow_weight_version:
            return await self._score(sequences)
        for _ in range(VERSION_ATTEMPTS):
            before = await self._served_weight_version()
            results = await self._score(sequences)
            after = await self._served_weight_version()
            if before == after:
                if after != self._weight_version:
                    self._weight_version = after
                    self._identity = None  # recomputed, naming the new version
                return results
            self.version_retries += 1
            logger.info("vllm-server probe: weights %s -> %s during a call; scoring again", before, after)
        raise ProbeError(
            f"the served weights changed during each of {VERSION_ATTEMPTS} scoring attempts at "
            f"{self._base_url}"
        )

    def _compute_identity(self) -> ProbeIdentity:
        """The served model's name and root as the server reports them, the content digest of the local
        tokenizer files (checked against the server's tokenizer at start-up) and, where the server reports
        it (dev mode), its weights' version (the model is then named ``MODEL@VERSION`` once a trainer set
        one). Without a version the server's weights are not known: a server restarted on other weights
        under the same name looks the same."""
        from mig_annotator.engine.probe.identity import folder_digest

        tokenizer = folder_digest(self._tokenizer_path, tokenizer_only=True)
        served = f"{self._served_model}\0{self._served_root}\0{tokenizer}"
        model = self._served_model
        if self._weight_version is not None:
            served += f"\0weights={self._weight_version}"
            if self._weight_version != UNSET_WEIGHT_VERSION:
                model = f"{model}@{self._weight_version}"
        digest = hashlib.sha256(served.encode()).hexdigest()
        return ProbeIdentity(model=model, digest=digest, backend=self.backend, dtype="served")

    def health(self) -> str | None:
        """None while a server of the pool answers ``/health``, else why not."""
        try:
            self._run(self._request("GET", "/health", retries=0))
        except ProbeError as error:
            return str(error)
        return None

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._pool.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    # -- start-up -----------------------------------------------------------------------------------------

    async def _read_model(self) -> tuple[str, str, int]:
        """The served model's id, its root (the path or hub name it was loaded from) and max_model_len.

        With several servers, every one must serve the same model id and root; the context limit is the
        smallest of theirs.
        """
        served: list[tuple[str, str, int]] = []
        for server, response in zip(self._pool.servers, await self._each("GET", "/v1/models"), strict=True):
            models = _checked(response, "GET /v1/models").json()
            try:
                model = models["data"][0]
                root = str(model.get("root") or model["id"])
                served.append((str(model["id"]), root, int(model["max_model_len"])))
            except (KeyError, IndexError, TypeError, ValueError) as error:
                raise ProbeError(f"{server.url}/v1/models: unexpected answer {models!r}") from error
        models_seen = {(model, root) for model, root, _ in served}
        if len(models_seen) > 1:
            listing = ", ".join(
                f"{server.url}: {model}"
                for server, (model, _, _) in zip(self._pool.servers, served, strict=True)
            )
            raise ProbeError(
                f"the vLLM servers serve different models ({listing}); one probe needs one model"
            )
        model, root, _ = served[0]
        return model, root, min(limit for _, _, limit in served)

    async def _served_weight_version(self) -> str | None:
        """The weights' version every server of the pool reports (``GET /weight_info``), or None when they
        do not report one (not in dev mode); servers that report different versions are an error."""
        versions: set[str | None] = set()
        for response in await self._each("GET", WEIGHT_INFO_ROUTE):
            if response.status_code in (404, 405):
                versions.add(None)
                continue
            version = _checked(response, f"GET {WEIGHT_INFO_ROUTE}").json().get("weight_version")
            versions.add(None if version is None else str(version))
        if len(versions) > 1:
            listed = ", ".join(sorted(map(str, versions)))
            raise ProbeError(f"the vLLM servers at {self._base_url} hold different weight versions: {listed}")
        return versions.pop()

    async def _check_tokenizer(self) -> None:
        for text in TOKENIZER_CHECK_TEXTS:
            for special in (False, True):
                body = {"model": self._served_model, "prompt": text, "add_special_tokens": special}
                local = self._tokenizer([text], add_special_tokens=special)["input_ids"][0]
                answers = await self._each("POST", "/tokenize", json=body)
                for server, response in zip(self._pool.servers, answers, strict=True):
                    served = _checked(response, "POST /tokenize").json()["tokens"]
                    if list(served) != list(local):
                        raise TokenizerMismatch(
                            f"the tokenizer at {self._tokenizer_path} does not match the server's "
                            f"({self._served_model} at {server.url}) on {text!r} "
                            f"(add_special_tokens={special}): local {local[:12]}..., "
                            f"server {served[:12]}...; point the probe's model at the served model's folder"
                        )

    async def _path_problem(self, path: ScoringPath) -> str | None:
        """Why ``path`` cannot run on this server, or None when a trial probe that hits the prefix cache gave
        the same numbers as without the cache (:func:`engine.probe.vllm_common.trial_requests`)."""
        if path == "prompt-logprobs":
            check = self._tokenizer([TOKENIZER_CHECK_TEXTS[0]], add_special_tokens=False)["input_ids"][0]
            await self._completions([ProbeRequest(0, 0, list(check), list(check[-3:]))])
            return None
        problem = ""
        for _ in range(TRIAL_ATTEMPTS):  # a garbage row the server cannot serialise spoils one trial
            fill, probe = trial_requests(self._tokenizer, self._context_limit)
            try:
                await self._generate(fill, path, use_cache=True)
                cached_scores, cached = await self._generate(probe, path, use_cache=True)
                fresh_scores, _ = await self._generate(probe, path, use_cache=False)
            except ProbeError as error:
                return str(error)
            if cached_scores is None or fresh_scores is None:
                problem = "the trial probe's answer rows could not be read"
                continue
            if cached is None:
                return (
                    "the server does not report cached tokens (start it with --enable-prompt-tokens-details)"
                )
            if cached == 0:
                return "the prefix cache gave no hit (start the server with --enable-prefix-caching)"
            difference = float(np.abs(cached_scores - fresh_scores).max())
            if difference > TRIAL_TOLERANCE:
                return f"scores with the prefix cache differ from those without by {difference:.2g} nats"
            return None
        return problem

    # -- scoring ------------------------------------------------------------------------------------------

    async def _score(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        plan = plan_requests(sequences, group_prefixes=self._settings.group_prefixes)
        collector = ResultCollector(sequences, plan.groups)
        if self._path == "prompt-logprobs":
            flat = [request for request in plan.all() if request.vision is None]
            with_images = [request for request in plan.all() if request.vision is not None]
            size = self._settings.prompts_per_request
            chunks = [flat[i : i + size] for i in range(0, len(flat), size)]
            await asyncio.gather(
                *(self._completions_into(chunk, collector) for chunk in chunks),
                *(self._image_probe_into(request, collector) for request in with_images),
            )
        else:
            traces = [requests for requests in plan.per_sequence if requests]
            await asyncio.gather(*(self._trace_into(trace, collector) for trace in traces))
        if collector.missing():
            raise ProbeError(f"vLLM returned no scores for sequences {collector.missing()}")
        self._record_forward()
        return [ProbeResult(out, n) for out, n in zip(collector.outputs, collector.forwarded, strict=True)]

    async def _completions_into(self, chunk: list[ProbeRequest], collector: ResultCollector) -> None:
        try:
            results = await self._completions(chunk)
        except VLLMServerUnavailable:
            raise
        except ProbeError as error:
            items = sorted({request.item for request in chunk})
            raise ProbeError(f"sequences {items}: {error}") from error
        for request, logprobs in zip(chunk, results, strict=True):
            collector.put(request, logprobs, len(request.prompt))

    async def _image_probe_into(self, request: ProbeRequest, collector: ResultCollector) -> None:
        """A probe with images on the full-prefill path: ``/v1/completions`` takes no images, so it goes to
        ``/inference/v1/generate`` with the cache off."""
        try:
            logprobs, _ = await self._generate(request, "prompt-logprobs", use_cache=False)
        except VLLMServerUnavailable:
            raise
        except ProbeError as error:
            raise ProbeError(f"sequence {request.item}: {error}") from error
        assert logprobs is not None
        collector.put(request, logprobs, len(request.prompt))

    async def _trace_into(self, trace: list[ProbeRequest], collector: ResultCollector) -> None:
        """The longest probe first (it fills the cache), then the others at once."""
        try:
            await self._probe_into(trace[0], collector)
            await asyncio.gather(*(self._probe_into(request, collector) for request in trace[1:]))
        except VLLMServerUnavailable:
            raise
        except ProbeError as error:
            raise ProbeError(f"sequence {trace[0].item}: {error}") from error

    async def _probe_into(self, request: ProbeRequest, collector: ResultCollector) -> None:
        logprobs, cached = await self._generate(request, self._path, use_cache=True)
        forwarded = len(request.prompt) - (cached or 0)
        if logprobs is None:  # the cache covered an answer row: recompute the probe without it
            logprobs, _ = await self._generate(request, self._path, use_cache=False)
            forwarded += len(request.prompt)
        assert logprobs is not None
        collector.put(request, logprobs, forwarded)

    async def _completions(self, chunk: list[ProbeRequest]) -> list[np.ndarray]:
        body = {
            "model": self._served_model,
            "prompt": [request.prompt for request in chunk],
            "max_tokens": 1,
            "temperature": 0,
            "prompt_logprobs": 0,
        }
        choices = sorted(
            (await self._request("POST", "/v1/completions", json=body)).json()["choices"],
            key=lambda choice: choice["index"],
        )
        return [
            answer_logprobs_from_prompt_logprobs(request, choice.get("prompt_logprobs"))
            for request, choice in zip(chunk, choices, strict=True)
        ]

    async def _generate(
        self, request: ProbeRequest, path: ScoringPath, *, use_cache: bool
    ) -> tuple[np.ndarray | None, int | None]:
        """One probe through ``/inference/v1/generate``: its answer log-probs and the cached prompt tokens.

        The log-probs are None when the prefix cache covered an answer row (those rows are not computed)."""
        body: dict[str, Any] = {
            "model": self._served_model,
            "token_ids": request.engine_prompt,
            "sampling_params": sampling_fields(path, request, use_cache=use_cache),
        }
        if request.vision is not None:
            body["content_parts"] = image_data_urls(request.vision)
            body["return_token_ids"] = True
        try:
            answer = (await self._request("POST", GENERATE_ROUTE, json=body)).json()
        except ProbeError as error:
            # vLLM 0.32 answers 403 ("Scale-out endpoints are disabled") without --enable-scale-out
            if request.vision is not None and ("HTTP 403" in str(error) or "HTTP 404" in str(error)):
                raise ProbeError(
                    f"a question with images needs the server's {GENERATE_ROUTE} route (start it with "
                    f"--enable-scale-out): /v1/completions takes no images ({error})"
                ) from error
            # The rows of cached positions are unwritten memory; when they hold NaN or +inf the server
            # cannot serialise its answer (HTTP 400 "Out of range float values"): recompute without the cache.
            if use_cache and path == "prefix-cached" and "Out of range float" in str(error):
                self.cache_fallbacks += 1
                return None, None
            raise
        check_engine_prompt(request, answer.get("prompt_token_ids"))
        details = (answer.get("usage") or {}).get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens")
        if use_cache and not request.cache_is_safe(cached or 0):
            self.cache_fallbacks += 1
            return None, cached
        if path == "token-scores":
            encoded = answer.get("prompt_token_id_logprobs")
            scores = None if encoded is None else np.load(io.BytesIO(base64.b64decode(encoded)))
            return answer_logprobs_from_token_scores(request, scores), cached
        return answer_logprobs_from_prompt_logprobs(request, answer.get("prompt_logprobs")), cached

    # -- HTTP ---------------------------------------------------------------------------------------------

    async def _each(self, method: str, route: str, *, json: Any = None) -> list[httpx.Response]:
        """The same request to every server of the pool, in order (start-up checks)."""
        try:
            return await self._pool.each(method, route, json=json)
        except ServersUnavailable as error:
            raise VLLMServerUnavailable(str(error)) from error

    async def _request(self, method: str, route: str, *, json: Any = None, retries: int | None = None):
        """One request to the pool's best server (retried on others: :mod:`engine.probe.server_pool`)."""
        try:
            response = await self._pool.request(method, route, json=json, retries=retries)
        except ServersUnavailable as error:
            raise VLLMServerUnavailable(str(error)) from error
        return _checked(response, f"{method} {route}")

    # -- the event loop thread ----------------------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("VLLMServerProbe.score called from its own event loop; use ascore")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _on_loop(self, coroutine: Coroutine[Any, Any, T]) -> Awaitable[T]:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))


def _checked(response: httpx.Response, what: str) -> httpx.Response:
    """The response, or a :class:`ProbeError` for a 4xx/5xx answer the pool passed on."""
    if response.status_code >= 400:
        raise ProbeError(f"{what}: HTTP {response.status_code}: {_error_message(response)}")
    return response


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
