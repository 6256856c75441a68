"""Which traces go in which request: requests the service takes, round by round, and what came back.

Every per-request bound the service advertises (``GET /v1/info`` ``limits``) is kept: traces per request
(and the queue), the body's bytes (each trace's JSON is measured as sent), and the forwarded probe tokens,
estimated by :func:`schemas.probe_cost.estimated_probe_tokens` (the engine's rule on the text's bytes,
times the tokens per byte the service measured with its probe's tokenizer) and packed to
:data:`TOKEN_HEADROOM` of the budget. With several replicas the tightest bound of each kind holds. A trace
over a bound on its own fails alone, in its place: over the body limit it is not sent; over the token
budget the service answers it as that trace's failure. Should a request still be refused as too large
(413: the estimate was short), its traces are sent again in halves, down to one trace, whose refusal is
its failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx

from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.api import AnnotateResponse, InfoResponse, TokenRewards, TraceFailure
from mig_annotator.schemas.config import ScoringConfig
from mig_annotator.schemas.probe_cost import estimated_probe_tokens

TraceLike = Trace | Mapping[str, Any]
TraceResult = TraceAnnotation | TraceFailure
TokenOffsets = Sequence[Sequence[int]] | None

TOKEN_HEADROOM = 0.8
"""Share of the service's probe-token budget a request is packed to (the client's count is an estimate)."""
BODY_HEADROOM_BYTES = 4096
"""Bytes of a body kept for its keys, options and separators, beyond its traces' own JSON."""

_TRACE_PREFIX = re.compile(r"^(traces|token_offsets)\[(\d+)\]")


class RequestFailed(Exception):
    """What a request's plan ended in, for :meth:`Rounds.take`: its HTTP status, code, message, fields."""

    def __init__(self, status: int, error: str, message: str, fields: Sequence[str]) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.fields = status, error, message, list(fields)


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """The bounds one request must keep (the tightest over the replicas that answered)."""

    traces: int
    queue_traces: int
    body_bytes: int
    probe_tokens: int | None
    tokens_per_byte: float | None
    scoring_defaults: ScoringConfig

    @classmethod
    def of(cls, infos: Sequence[InfoResponse], own_traces: int | None) -> ServiceLimits:
        limits = [info.limits for info in infos]
        traces = min(min(limit.max_traces_per_request, limit.queue_max_traces) for limit in limits)
        budgets = [limit.max_request_probe_tokens for limit in limits]
        ratios = [limit.probe_tokens_per_byte for limit in limits]
        return cls(
            traces=max(1, min(traces, own_traces) if own_traces is not None else traces),
            queue_traces=sum(limit.queue_max_traces for limit in limits),
            body_bytes=min(limit.max_body_bytes for limit in limits),
            probe_tokens=None if None in budgets else min(b for b in budgets if b is not None),
            tokens_per_byte=max((r for r in ratios if r is not None), default=None),
            scoring_defaults=infos[0].scoring_defaults,
        )


def trace_json(trace: TraceLike) -> dict[str, Any]:
    """The trace's JSON; ``group_id`` and ``images`` (the question's images, base64) only when set (a
    service older than the field refuses the key)."""
    if not isinstance(trace, Trace):
        return dict(trace)
    unset = {name for name in ("group_id", "images") if not getattr(trace, name)}
    return trace.model_dump(mode="json", exclude=unset or None)


def _encoded(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class Rounds:
    """The requests of one ``annotate``, round by round: which traces to send, and what came back.

    ``bodies()`` gives the next round's requests as JSON bytes (none when done); ``take(replies)`` reads
    them back, each a response or the :class:`RequestFailed` its plan ended in. A 504, or a trace answered
    ``deadline_exceeded``, puts the trace in the next round, whose requests hold half as many traces;
    after ``max_rounds`` such traces keep their ``deadline_exceeded`` failure. A 413 sends the request's
    traces again in halves (not counted as a round).
    """

    def __init__(
        self,
        traces: Sequence[TraceLike],
        config: Mapping[str, Any] | None,
        limits: ServiceLimits,
        max_rounds: int,
        token_offsets: Sequence[TokenOffsets] | None = None,
        min_probe_version: int | None = None,
    ) -> None:
        items = [trace_json(trace) for trace in traces]
        if token_offsets is not None and len(token_offsets) != len(items):
            raise ValueError(
                f"token_offsets has {len(token_offsets)} entries for {len(items)} traces: give one "
                "per trace (None for a trace without offsets)"
            )
        self._encoded = [_encoded(item) for item in items]
        self._offsets = (
            None
            if token_offsets is None
            else [
                _encoded(None if given is None else [[int(a), int(b)] for a, b in given])
                for given in token_offsets
            ]
        )
        options: dict[str, Any] = {"strict": False}
        if config:
            options["config"] = dict(config)
        if min_probe_version is not None:
            options["min_probe_version"] = min_probe_version
        self._options = _encoded(options)[1:-1]
        self._limits = limits
        self._tokens = self._estimates(items, config, limits)
        self.token_rewards: list[TokenRewards | None] = [None] * len(items)
        self.results: list[TraceResult | None] = [None] * len(items)
        self._cap = [limits.traces] * len(items)  # the most traces a request holding this one may have
        self._chunk = limits.traces
        self._rounds_left = max_rounds
        self._todo = self._fitting(range(len(items)))
        self._split = False
        self._sent: list[list[int]] = []

    @staticmethod
    def _estimates(
        items: Sequence[Mapping[str, Any]], config: Mapping[str, Any] | None, limits: ServiceLimits
    ) -> list[int] | None:
        if limits.probe_tokens is None:
            return None
        # unmeasured: a byte-level tokenizer makes at most one token of a byte
        tokens_per_byte = 1.0 if limits.tokens_per_byte is None else limits.tokens_per_byte
        scoring = limits.scoring_defaults
        if config:
            with suppress(ValueError):  # a bad option: the service names it
                scoring = ScoringConfig.model_validate({**scoring.model_dump(), **config})
        return [estimated_probe_tokens(item, scoring, tokens_per_byte) for item in items]

    def _fitting(self, indices: Sequence[int]) -> list[int]:
        """``indices`` less the traces too large to be sent in any request (each gets its failure)."""
        room = self._limits.body_bytes - BODY_HEADROOM_BYTES
        fitting = []
        for i in indices:
            size = self._size(i)
            if size > room:
                self.results[i] = TraceFailure(
                    index=i,
                    field=f"traces[{i}]",
                    message=f"the trace is {size} bytes as JSON, over the service's body limit of "
                    f"{self._limits.body_bytes} bytes per request (MIG_MAX_BODY_BYTES); not sent",
                    code="invalid_trace",
                )
            else:
                fitting.append(i)
        return fitting

    def _size(self, i: int) -> int:
        return len(self._encoded[i]) + 1 + (0 if self._offsets is None else len(self._offsets[i]) + 1)

    def _pack(self, todo: Sequence[int]) -> list[list[int]]:
        """``todo`` in order, cut into requests within every bound."""
        room = self._limits.body_bytes - BODY_HEADROOM_BYTES
        budget = None if self._limits.probe_tokens is None else self._limits.probe_tokens * TOKEN_HEADROOM
        chunks: list[list[int]] = []
        current: list[int] = []
        size = tokens = 0
        cap = self._chunk
        for i in todo:
            cost = 0 if self._tokens is None else self._tokens[i]
            full = current and (
                len(current) + 1 > min(cap, self._cap[i])
                or size + self._size(i) > room
                or (budget is not None and tokens + cost > budget)
            )
            if full:
                chunks.append(current)
                current, size, tokens, cap = [], 0, 0, self._chunk
            current.append(i)
            size += self._size(i)
            tokens += cost
            cap = min(cap, self._cap[i])
        if current:
            chunks.append(current)
        return chunks

    def bodies(self) -> list[bytes]:
        if not self._todo or (self._rounds_left <= 0 and not self._split):
            self._todo = []
            return []
        if not self._split:
            self._rounds_left -= 1
        self._split = False
        self._sent = self._pack(self._todo)
        self._todo = []
        return [self._body(chunk) for chunk in self._sent]

    def _body(self, chunk: Sequence[int]) -> bytes:
        traces = b",".join(self._encoded[i] for i in chunk)
        body = b'{"traces":[' + traces + b"]," + self._options
        if self._offsets is not None:
            body += b',"token_offsets":[' + b",".join(self._offsets[i] for i in chunk) + b"]"
        return body + b"}"

    def sizes(self) -> list[int]:
        """Traces in each request of the round :meth:`bodies` gave last."""
        return [len(chunk) for chunk in self._sent]

    def take(self, replies: Sequence[httpx.Response | RequestFailed]) -> None:
        unfinished = False
        for chunk, reply in zip(self._sent, replies, strict=True):
            if isinstance(reply, RequestFailed):
                if reply.status == 413:
                    self._too_large(chunk, reply)
                    continue
                message = f"HTTP 504 {reply.error}: {reply.message}"
                for i in chunk:
                    self._late(i, message)
                unfinished = True
                continue
            answer = AnnotateResponse.model_validate_json(reply.content)
            failures = {failure.index: failure for failure in answer.errors}
            placed = answer.token_rewards or [None] * len(chunk)
            for position, (i, annotation) in enumerate(zip(chunk, answer.annotations, strict=True)):
                if annotation is not None:
                    self.results[i] = annotation
                    self.token_rewards[i] = placed[position]
                    continue
                failure = failures[position]
                if failure.code == "deadline_exceeded":
                    self._late(i, failure.message)
                    unfinished = True
                else:
                    self.results[i] = failure.model_copy(
                        update={"index": i, "field": _TRACE_PREFIX.sub(rf"\1[{i}]", failure.field)}
                    )
        if unfinished:  # smaller requests next round: half the largest one sent
            self._chunk = max(1, min(self._chunk, max(len(chunk) for chunk in self._sent)) // 2)

    def _too_large(self, chunk: Sequence[int], reply: RequestFailed) -> None:
        """A request refused as too large: its traces again in halves; a single trace fails alone."""
        if len(chunk) == 1:
            (i,) = chunk
            field = _TRACE_PREFIX.sub(rf"\1[{i}]", reply.fields[0]) if reply.fields else f"traces[{i}]"
            self.results[i] = TraceFailure(
                index=i, field=field, message=f"HTTP 413 {reply.error}: {reply.message}", code="invalid_trace"
            )
            return
        for i in chunk:
            self._cap[i] = max(1, len(chunk) // 2)
        self._todo.extend(chunk)
        self._todo.sort()
        self._split = True

    def _late(self, i: int, message: str) -> None:
        self._todo.append(i)
        self._todo.sort()
        self.results[i] = TraceFailure(
            index=i, field=f"traces[{i}]", message=message, code="deadline_exceeded"
        )

    def done(self) -> list[TraceResult]:
        assert all(result is not None for result in self.results)
        return self.results  # type: ignore[return-value]
