"""Trainer integrations for the reward service, in one module with no server-side imports.

* :class:`MigClient` / :class:`AsyncMigClient`: ``annotate(traces)`` over HTTP, with retries on 429/503
  (honouring ``Retry-After``) and requests split to the server's ``max_traces_per_request``.
* :func:`trl_reward_function`: a reward function for TRL's ``GRPOTrainer(reward_funcs=[...])``.
* :func:`compute_score`: verl's ``custom_reward_function`` (``compute_score(data_source, solution_str,
  ground_truth, extra_info)``), returning ``{"score": ..., "outcome": ..., "process_reward": ...}``.
* :class:`MigRewardManager`: a verl reward manager with a token-level ``reward_tensor``: each step's reward
  on the step's last token, the outcome on the answer's last token, in the policy's tokenizer.

The service URL defaults to ``$MIG_SERVICE_URL`` (else http://127.0.0.1:8000) and the API key to
``$MIG_SERVICE_API_KEY``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

import httpx

from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.api import AnnotateResponse, ErrorResponse, InfoResponse, RewardScalar
from mig_annotator.service.scalar import scalar_reward

__all__ = [
    "AsyncMigClient",
    "MigClient",
    "MigRewardManager",
    "MigServiceError",
    "compute_score",
    "token_end_offsets",
    "trl_reward_function",
]

URL_ENV = "MIG_SERVICE_URL"
API_KEY_ENV = "MIG_SERVICE_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
_RETRIED_STATUSES = (429, 503)
_MAX_RETRY_WAIT_S = 30.0

TraceLike = Trace | Mapping[str, Any]


class MigServiceError(RuntimeError):
    """The service answered an error (after retries); carries its status, code and the fields at fault."""

    def __init__(self, status: int, error: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(f"HTTP {status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.fields = list(fields)


# ------------------------------------------------------------------------------------------------- client


class _ClientConfig:
    def __init__(self, base_url: str | None, api_key: str | None, max_retries: int) -> None:
        self.base_url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.max_retries = max_retries

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def _annotate_body(traces: Sequence[TraceLike], config: Mapping[str, Any] | None) -> dict[str, Any]:
    items = [trace.model_dump(mode="json") if isinstance(trace, Trace) else dict(trace) for trace in traces]
    body: dict[str, Any] = {"traces": items}
    if config:
        body["config"] = dict(config)
    return body


def _error_of(response: httpx.Response) -> MigServiceError:
    try:
        error = ErrorResponse.model_validate_json(response.content)
    except ValueError:
        return MigServiceError(response.status_code, "http_error", response.text[:500])
    return MigServiceError(
        response.status_code, error.error, error.message, [field.field for field in error.fields]
    )


def _retry_wait_s(response: httpx.Response, attempt: int) -> float:
    given = response.headers.get("Retry-After", "")
    wait = float(given) if given.replace(".", "", 1).isdigit() else 0.5 * 2**attempt
    return min(wait, _MAX_RETRY_WAIT_S)


def _chunks(items: Sequence[TraceLike], size: int) -> list[Sequence[TraceLike]]:
    return [items[start : start + size] for start in range(0, len(items), size)] or [items]


class MigClient:
    """A synchronous client of the reward service (thread-safe)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 5,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._config = _ClientConfig(base_url, api_key, max_retries)
        self._http = http_client or httpx.Client(timeout=timeout_s)
        self._max_traces: int | None = None

    @property
    def base_url(self) -> str:
        return self._config.base_url

    def __enter__(self) -> MigClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def info(self) -> InfoResponse:
        return InfoResponse.model_validate_json(self._send("GET", "/v1/info").content)

    def ready(self) -> bool:
        try:
            return self._http.get(f"{self.base_url}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_until_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.base_url} was not ready within {timeout_s}s")
            time.sleep(0.2)

    def annotate(
        self, traces: Sequence[TraceLike], config: Mapping[str, Any] | None = None
    ) -> list[TraceAnnotation]:
        """Annotations in input order; more traces than one request takes are sent in several."""
        if self._max_traces is None:
            self._max_traces = self.info().limits.max_traces_per_request
        annotations: list[TraceAnnotation] = []
        for chunk in _chunks(traces, self._max_traces):
            response = self._send("POST", "/v1/annotate", json=_annotate_body(chunk, config))
            annotations.extend(AnnotateResponse.model_validate_json(response.content).annotations)
        return annotations

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in itertools.count():
            response = self._http.request(
                method, f"{self.base_url}{path}", headers=self._config.headers(), **kwargs
            )
            if response.status_code < 400:
                return response
            if response.status_code not in _RETRIED_STATUSES or attempt >= self._config.max_retries:
                raise _error_of(response)
            time.sleep(_retry_wait_s(response, attempt))
        raise AssertionError("unreachable")


class AsyncMigClient:
    """An asyncio client of the reward service; a large annotate() sends its requests concurrently."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 5,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._config = _ClientConfig(base_url, api_key, max_retries)
        self._http = http_client or httpx.AsyncClient(timeout=timeout_s)
        self._max_traces: int | None = None

    @property
    def base_url(self) -> str:
        return self._config.base_url

    async def __aenter__(self) -> AsyncMigClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def info(self) -> InfoResponse:
        return InfoResponse.model_validate_json((await self._send("GET", "/v1/info")).content)

    async def annotate(
        self, traces: Sequence[TraceLike], config: Mapping[str, Any] | None = None
    ) -> list[TraceAnnotation]:
        if self._max_traces is None:
            self._max_traces = (await self.info()).limits.max_traces_per_request
        responses = await asyncio.gather(
            *(
                self._send("POST", "/v1/annotate", json=_annotate_body(chunk, config))
                for chunk in _chunks(traces, self._max_traces)
            )
        )
        return [
            annotation
            for response in responses
            for annotation in AnnotateResponse.model_validate_json(response.content).annotations
        ]

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in itertools.count():
            response = await self._http.request(
                method, f"{self.base_url}{path}", headers=self._config.headers(), **kwargs
            )
            if response.status_code < 400:
                return response
            if response.status_code not in _RETRIED_STATUSES or attempt >= self._config.max_retries:
                raise _error_of(response)
            await asyncio.sleep(_retry_wait_s(response, attempt))
        raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------- TRL


def _message_text(value: Any, role: str | None) -> str:
    """A plain string, or the content of a conversation's messages (the last one of ``role`` if given)."""
    if isinstance(value, str):
        return value
    messages = [m for m in value if role is None or m.get("role") == role] or list(value)
    if role is not None:
        return str(messages[-1]["content"])
    return "".join(str(m["content"]) for m in messages)


def trl_reward_function(
    client: MigClient | None = None,
    *,
    reward: RewardScalar = "mixed",
    lam: float = 1.0,
    answer_column: str = "answer",
    reference_transform: Callable[[str], str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Callable[..., list[float]]:
    """A TRL ``GRPOTrainer`` reward function: one float per completion.

    ``reward``: outcome (0/1), process (sum of step rewards) or mixed (outcome + lam * process).
    The reference answer comes from the dataset column ``answer_column`` (TRL passes columns as keyword
    arguments); ``reference_transform`` may extract it (GSM8K: ``lambda s: s.split("####")[-1].strip()``).
    Standard (string) and conversational (list of messages) prompts and completions both work; the
    question is the prompt's last user message.
    """
    client = client or MigClient()
    kind: RewardScalar = reward
    if kind not in get_args(RewardScalar):
        raise ValueError(f"reward must be one of {get_args(RewardScalar)}, got {kind!r}")

    def reward_func(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if answer_column not in kwargs:
            columns = sorted(k for k in kwargs if k not in ("trainer_state", "completion_ids"))
            raise ValueError(
                f"trl_reward_function: the dataset has no column {answer_column!r} (columns: {columns}); "
                "pass answer_column=..."
            )
        references = [str(value) for value in kwargs[answer_column]]
        if reference_transform is not None:
            references = [reference_transform(value) for value in references]
        traces = [
            Trace(
                id=f"trl-{index}",
                question=_message_text(prompt, "user"),
                completion=_message_text(completion, None),
                reference_answer=reference,
            )
            for index, (prompt, completion, reference) in enumerate(
                zip(prompts, completions, references, strict=True)
            )
        ]
        return [scalar_reward(a, kind, lam) for a in client.annotate(traces, config)]

    reward_func.__name__ = f"mig_{reward}"
    return reward_func


# --------------------------------------------------------------------------------------------------- verl

_shared_clients: dict[tuple[str | None, str | None], MigClient] = {}
_shared_lock = threading.Lock()


def _shared_client(base_url: str | None, api_key: str | None) -> MigClient:
    with _shared_lock:
        key = (base_url, api_key)
        if key not in _shared_clients:
            _shared_clients[key] = MigClient(base_url, api_key=api_key)
        return _shared_clients[key]


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    reward: RewardScalar = "mixed",
    lam: float = 1.0,
    **_: Any,
) -> dict[str, float]:
    """verl's custom reward function. The question comes from ``extra_info["question"]`` (verl's data
    preprocessing puts it there). Extra keyword arguments come from ``custom_reward_function.reward_kwargs``.
    """
    question = (extra_info or {}).get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(
            "compute_score: extra_info['question'] is required (the problem text); add it in preprocessing"
        )
    trace = Trace(
        id=f"verl-{data_source}",
        question=question,
        completion=solution_str,
        reference_answer=str(ground_truth),
    )
    (annotation,) = _shared_client(base_url, api_key).annotate([trace])
    return {
        "score": scalar_reward(annotation, reward, lam),
        "outcome": float(annotation.outcome),
        "process_reward": annotation.process_reward,
    }


def token_end_offsets(tokenizer: Any, token_ids: Sequence[int], text: str) -> list[int]:
    """For each token, where its characters end in ``text`` (``decode(ids, skip_special_tokens=True)``).

    Re-tokenising ``text`` with offsets gives them directly when it yields the same ids (the usual case);
    otherwise each prefix is decoded. Special tokens end where the text before them ends.
    """
    special = set(getattr(tokenizer, "all_special_ids", ()))
    plain = [(position, token) for position, token in enumerate(token_ids) if token not in special]
    ends = [0] * len(token_ids)
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        same = list(encoded["input_ids"]) == [token for _, token in plain]
    except (NotImplementedError, ValueError, TypeError):
        same = False
    if same:
        for (position, _), (_, end) in zip(plain, encoded["offset_mapping"], strict=True):
            ends[position] = end
    else:
        for position, _ in plain:
            prefix = tokenizer.decode(list(token_ids[: position + 1]), skip_special_tokens=True)
            ends[position] = min(len(prefix), len(text))
    running = 0
    for position in range(len(ends)):
        running = max(running, ends[position])
        ends[position] = running
    return ends


def _token_at(ends: Sequence[int], char_end: int) -> int:
    """The token holding character ``char_end - 1`` (the first token ending at or after ``char_end``)."""
    for position, end in enumerate(ends):
        if end >= char_end:
            return position
    return len(ends) - 1


class MigRewardManager:
    """A verl reward manager: token-level MIG rewards from the service.

    ``reward_tensor[i, t]`` holds ``process_weight * r_k`` on the last token of step k and
    ``outcome_weight * outcome`` on the last token of the extracted answer (the last response token
    when no answer was found), in the policy tokenizer's tokens. Same constructor and call as verl's
    ``AbstractRewardManager``; register it with ``register_verl_reward_manager()``.
    """

    def __init__(
        self,
        tokenizer: Any,
        num_examine: int = 0,
        compute_score: Callable[..., Any] | None = None,
        reward_fn_key: str = "data_source",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        outcome_weight: float = 1.0,
        process_weight: float = 1.0,
        client: MigClient | None = None,
        config: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.reward_fn_key = reward_fn_key
        self.outcome_weight = outcome_weight
        self.process_weight = process_weight
        self.config = config
        self._client = client or _shared_client(base_url, api_key)

    def __call__(self, data: Any, return_dict: bool = False) -> Any:
        import torch

        if "rm_scores" in data.batch.keys():  # noqa: SIM118 - TensorDict refuses `in` on itself
            scores = data.batch["rm_scores"]
            return {"reward_tensor": scores, "reward_extra_info": {}} if return_dict else scores
        prompts, responses = data.batch["prompts"], data.batch["responses"]
        attention = data.batch["attention_mask"]
        prompt_width = prompts.shape[-1]
        response_lengths = attention[:, prompt_width:].sum(dim=-1).tolist()
        prompt_lengths = attention[:, :prompt_width].sum(dim=-1).tolist()
        extra = data.non_tensor_batch.get("extra_info")
        sources = data.non_tensor_batch.get(self.reward_fn_key)
        response_ids: list[list[int]] = []
        traces: list[Trace] = []
        for i in range(responses.shape[0]):
            ids = responses[i, : int(response_lengths[i])].tolist()
            response_ids.append(ids)
            info = extra[i] if extra is not None and extra[i] is not None else {}
            question = info.get("question") or self.tokenizer.decode(
                prompts[i, prompt_width - int(prompt_lengths[i]) :].tolist(), skip_special_tokens=True
            )
            traces.append(
                Trace(
                    id=f"verl-{sources[i] if sources is not None else 'batch'}-{i}",
                    question=question,
                    completion=self.tokenizer.decode(ids, skip_special_tokens=True),
                    reference_answer=str(data.non_tensor_batch["reward_model"][i]["ground_truth"]),
                )
            )
        annotations = self._client.annotate(traces, self.config)
        reward_tensor = torch.zeros(responses.shape, dtype=torch.float32)
        for i, (ids, annotation) in enumerate(zip(response_ids, annotations, strict=True)):
            if not ids:
                continue
            ends = token_end_offsets(self.tokenizer, ids, annotation.completion)
            for step in annotation.steps:
                reward_tensor[i, _token_at(ends, step.span.end)] += self.process_weight * step.reward
            answer_token = (
                _token_at(ends, annotation.answer_span.end) if annotation.answer_span else len(ids) - 1
            )
            reward_tensor[i, answer_token] += self.outcome_weight * annotation.outcome
        if not return_dict:
            return reward_tensor
        return {
            "reward_tensor": reward_tensor,
            "reward_extra_info": {
                "outcome": [float(a.outcome) for a in annotations],
                "process_reward": [a.process_reward for a in annotations],
                "steps": [float(len(a.steps)) for a in annotations],
            },
        }


def register_verl_reward_manager(name: str = "mig") -> type[MigRewardManager]:
    """Register :class:`MigRewardManager` with verl under ``name`` (needs verl installed)."""
    from verl.workers.reward_manager import register  # type: ignore[import-not-found]

    return register(name)(MigRewardManager)  # type: ignore[no-any-return]
