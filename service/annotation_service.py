"""Annotating a request's traces: options, limits, preparation, the micro-batcher, the deadline, the audit.

The HTTP routes are thin wrappers over :meth:`AnnotationService.annotate`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ValidationError

from mig_annotator.mig.engine import Annotator, PreparedTrace, TraceError
from mig_annotator.schemas import ScoringConfig, Trace, TraceAnnotation
from mig_annotator.schemas.api import AuditRecord, FieldError
from mig_annotator.service.audit import AuditLog
from mig_annotator.service.batcher import MicroBatcher
from mig_annotator.service.errors import (
    DeadlineExceeded,
    InvalidRequest,
    NotReady,
    PayloadTooLarge,
    ServiceError,
)
from mig_annotator.service.errors import field_path as to_field_path
from mig_annotator.service.metrics import ServiceMetrics
from mig_annotator.service.runtime import ProbeRuntime
from mig_annotator.service.settings import ServiceSettings

logger = logging.getLogger("mig.service")


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the audit log and the deadline need to know about the request."""

    request_id: str
    received_at: datetime
    received_monotonic: float
    endpoint: str
    api_key_id: str | None


class AnnotationService:
    def __init__(
        self,
        settings: ServiceSettings,
        runtime: ProbeRuntime,
        batcher: MicroBatcher,
        audit: AuditLog | None,
        metrics: ServiceMetrics,
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._batcher = batcher
        self._audit = audit
        self._metrics = metrics
        self._prepare_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mig-prepare")

    def close(self) -> None:
        self._prepare_executor.shutdown(wait=True)

    def scoring_config(self, options: BaseModel | None) -> ScoringConfig:
        """The server defaults with the request's options laid over them (422 naming the bad option)."""
        defaults = self._settings.scoring
        if options is None:
            return defaults
        given = options.model_dump(exclude_unset=True)
        if not given:
            return defaults
        try:
            return ScoringConfig.model_validate({**defaults.model_dump(), **given})
        except ValidationError as error:
            fields = [
                FieldError(field=to_field_path(("config", *problem["loc"])), message=problem["msg"])
                for problem in error.errors()
            ]
            raise InvalidRequest("; ".join(f"{f.field}: {f.message}" for f in fields), fields) from error

    async def annotate(
        self, traces: Sequence[Trace], config: ScoringConfig, context: CallContext, field: str = "traces"
    ) -> list[TraceAnnotation]:
        """Annotations in input order, or a :class:`ServiceError` with the status to answer."""
        annotator = self._runtime.annotator
        if annotator is None:
            raise NotReady(self._runtime.error or "the probe is still loading", retry_after_s=5)
        limit = self._settings.max_traces_per_request
        if len(traces) > limit:
            self._metrics.rejected.labels(reason="too_many_traces").inc()
            raise PayloadTooLarge.for_field(
                field,
                f"{len(traces)} traces, over the limit of {limit} per request (MIG_MAX_TRACES_PER_REQUEST)",
            )
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(
            self._prepare_executor, self._prepare_all, annotator, traces, config, field
        )
        futures = self._batcher.submit(prepared, config)
        annotations = await self._wait(futures, context)
        latency_ms = (time.monotonic() - context.received_monotonic) * 1000.0
        self._metrics.traces_annotated.inc(len(annotations))
        if self._audit is not None:
            self._audit.append(
                [
                    self._audit_record(trace, item, context, latency_ms)
                    for trace, item in zip(traces, annotations, strict=True)
                ]
            )
        return annotations

    def _prepare_all(
        self, annotator: Annotator, traces: Sequence[Trace], config: ScoringConfig, field: str
    ) -> list[PreparedTrace]:
        """Segment and tokenise every trace and check the per-trace limits; 422 naming every bad trace."""
        prepared: list[PreparedTrace] = []
        problems: list[FieldError] = []
        for index, trace in enumerate(traces):
            where = field if field == "trace" else f"{field}[{index}]"
            try:
                prepared.append(self._prepare_one(annotator, trace, config, where))
            except InvalidRequest as error:
                problems.extend(error.fields)
        if problems:
            raise InvalidRequest("; ".join(f"{p.field}: {p.message}" for p in problems[:10]), problems)
        return prepared

    def _prepare_one(
        self, annotator: Annotator, trace: Trace, config: ScoringConfig, where: str
    ) -> PreparedTrace:
        settings = self._settings
        reasoning = "steps" if trace.steps is not None else "completion"
        _check_encodable(trace, where)
        if trace.steps is not None and len(trace.steps) > settings.max_steps_per_trace:
            raise _too_many_steps(f"{where}.steps", len(trace.steps), settings.max_steps_per_trace)
        try:
            item = annotator.prepare(trace, config)
        except TraceError as error:
            raise InvalidRequest.for_field(f"{where}.{error.field}", error.problem) from error
        except Exception as error:  # tokenizer or template failures on odd input: the trace's fault, named
            logger.warning("trace %r could not be prepared", trace.id, exc_info=True)
            raise InvalidRequest.for_field(where, f"the trace could not be prepared: {error}") from error
        if len(item.segmented.steps) > settings.max_steps_per_trace:
            raise _too_many_steps(
                f"{where}.{reasoning}", len(item.segmented.steps), settings.max_steps_per_trace
            )
        if item.sequence.probe_length > settings.max_tokens_per_trace:
            raise InvalidRequest.for_field(
                f"{where}.{reasoning}",
                f"the probe input is {item.sequence.probe_length} tokens, over the limit of "
                f"{settings.max_tokens_per_trace} per trace (MIG_MAX_TOKENS_PER_TRACE)",
            )
        return item

    async def _wait(
        self, futures: list[asyncio.Future[TraceAnnotation]], context: CallContext
    ) -> list[TraceAnnotation]:
        remaining = context.received_monotonic + self._settings.request_timeout_s - time.monotonic()
        done, pending = await asyncio.wait(
            futures, timeout=max(remaining, 0.0), return_when=asyncio.FIRST_EXCEPTION
        )
        for future in pending:
            future.cancel()  # traces not yet scored are skipped by the probe thread
        failures = [future.exception() for future in done if future.exception() is not None]
        if failures:
            first = failures[0]
            raise first if isinstance(first, ServiceError) else ServiceError(f"scoring failed: {first}")
        if pending:
            self._metrics.rejected.labels(reason="deadline").inc()
            raise DeadlineExceeded(
                f"not scored within the deadline of {self._settings.request_timeout_s}s "
                "(MIG_REQUEST_TIMEOUT_S)"
            )
        return [future.result() for future in futures]

    def _audit_record(
        self, trace: Trace, annotation: TraceAnnotation, context: CallContext, latency_ms: float
    ) -> AuditRecord:
        return AuditRecord(
            request_id=context.request_id,
            received_at=context.received_at,
            endpoint=context.endpoint,
            api_key_id=context.api_key_id,
            trace_id=trace.id,
            trace_sha256=trace_sha256(trace),
            config_hash=annotation.config_hash,
            probe_model=annotation.probe_model,
            probe_revision=self._runtime.revision,
            v0=annotation.v0,
            v_final=annotation.steps[-1].v if annotation.steps else annotation.v0,
            n_steps=len(annotation.steps),
            step_rewards=[step.reward for step in annotation.steps],
            process_reward=annotation.process_reward,
            max_reward=annotation.max_reward,
            outcome=annotation.outcome,
            sft_gate=annotation.sft_gate,
            truncated=annotation.truncated,
            latency_ms=latency_ms,
        )


def trace_sha256(trace: Trace) -> str:
    """SHA-256 of the trace's text: question, steps or completion, and reference answer (no id, metadata)."""
    text = {
        "question": trace.question,
        "steps": trace.steps,
        "completion": trace.completion,
        "reference_answer": trace.reference_answer,
    }
    canonical = json.dumps(text, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _too_many_steps(field: str, found: int, limit: int) -> InvalidRequest:
    return InvalidRequest.for_field(
        field, f"{found} steps, over the limit of {limit} per trace (MIG_MAX_STEPS_PER_TRACE)"
    )


def _check_encodable(trace: Trace, where: str) -> None:
    """Lone surrogates (valid in JSON escapes, not in UTF-8) cannot be tokenised: name the field."""
    texts: list[tuple[str, str]] = [("id", trace.id), ("question", trace.question)]
    texts.append(("reference_answer", trace.reference_answer))
    if trace.completion is not None:
        texts.append(("completion", trace.completion))
    for index, step in enumerate(trace.steps or []):
        texts.append((f"steps[{index}]", step))
    for name, text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidRequest.for_field(
                f"{where}.{name}", f"not valid Unicode text (a lone surrogate at position {error.start})"
            ) from error
