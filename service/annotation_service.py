"""Annotating a request's traces: options, limits, planning, the micro-batcher, the deadline, the audit.

The HTTP routes are thin wrappers over :meth:`AnnotationService.annotate`. Every per-request CPU step
(segmentation and tokenisation, in :meth:`Annotator.plan`) runs off the event loop, within the request's
deadline; scoring runs in the micro-batcher's probe thread. Failures are domain failures
(:mod:`mig_annotator.service.failures`); only :mod:`mig_annotator.service.errors` knows HTTP.
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
from mig_annotator.service.failures import (
    DeadlinePassed,
    InvalidInput,
    NotReady,
    ScoringFailed,
    ServiceFailure,
    TooManyTraces,
    field_path,
)
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
        self._plan_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mig-plan")

    def close(self) -> None:
        self._plan_executor.shutdown(wait=True)

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
                FieldError(field=field_path(("config", *problem["loc"])), message=problem["msg"])
                for problem in error.errors()
            ]
            raise InvalidInput("; ".join(f"{f.field}: {f.message}" for f in fields), fields) from error

    async def annotate(
        self, traces: Sequence[Trace], config: ScoringConfig, context: CallContext, field: str = "traces"
    ) -> list[TraceAnnotation]:
        """Annotations in input order, or a :class:`ServiceFailure` saying why not."""
        annotator = self._runtime.annotator
        if annotator is None:
            raise NotReady(self._runtime.error or "the probe is still loading", retry_after_s=5)
        limit = self._settings.max_traces_per_request
        if len(traces) > limit:
            self._metrics.rejected.labels(reason="too_many_traces").inc()
            raise TooManyTraces.for_field(
                field,
                f"{len(traces)} traces, over the limit of {limit} per request (MIG_MAX_TRACES_PER_REQUEST)",
            )
        deadline = context.received_monotonic + self._settings.request_timeout_s
        loop = asyncio.get_running_loop()
        planning = loop.run_in_executor(self._plan_executor, self._plan, annotator, traces, config, field)
        try:
            prepared = await asyncio.wait_for(planning, timeout=max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise self._deadline_passed() from None
        futures = self._batcher.submit(prepared, deadline)
        annotations = await self._wait(futures, deadline)
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

    def _plan(
        self, annotator: Annotator, traces: Sequence[Trace], config: ScoringConfig, field: str
    ) -> list[PreparedTrace]:
        """Plan every trace through the engine and check the service's per-trace limits.

        Raises :class:`InvalidInput` naming every bad trace's field (``traces[3].completion``).
        """
        settings = self._settings
        problems: list[FieldError] = []
        checked: list[Trace] = []
        wheres: list[str] = []
        for index, trace in enumerate(traces):
            where = field if field == "trace" else f"{field}[{index}]"
            try:
                _check_encodable(trace, where)
                steps_cap = settings.max_steps_per_trace
                if steps_cap is not None and trace.steps is not None and len(trace.steps) > steps_cap:
                    raise _too_many_steps(f"{where}.steps", len(trace.steps), steps_cap)
            except InvalidInput as error:
                problems.extend(error.fields)
                continue
            checked.append(trace)
            wheres.append(where)
        prepared: list[PreparedTrace] = []
        for where, item in zip(wheres, annotator.plan(checked, config), strict=True):
            if isinstance(item, TraceError):
                problems.append(FieldError(field=f"{where}.{item.field}", message=item.problem))
                continue
            problem = self._over_limit(item, where)
            if problem is not None:
                problems.append(problem)
                continue
            prepared.append(item)
        if problems:
            raise InvalidInput("; ".join(f"{p.field}: {p.message}" for p in problems[:10]), problems)
        return prepared

    def _over_limit(self, item: PreparedTrace, where: str) -> FieldError | None:
        """The service's own caps, when set (the probe's context limit is the engine's check)."""
        settings = self._settings
        reasoning = f"{where}.{'steps' if item.trace.steps is not None else 'completion'}"
        steps_cap, tokens_cap = settings.max_steps_per_trace, settings.max_tokens_per_trace
        if steps_cap is not None and item.step_count > steps_cap:
            return _too_many_steps(reasoning, item.step_count, steps_cap).fields[0]
        if tokens_cap is not None and item.probe_length > tokens_cap:
            return FieldError(
                field=reasoning,
                message=f"the probe input is {item.probe_length} tokens, over the limit of "
                f"{tokens_cap} per trace (MIG_MAX_TOKENS_PER_TRACE)",
            )
        return None

    async def _wait(
        self, futures: list[asyncio.Future[TraceAnnotation]], deadline: float
    ) -> list[TraceAnnotation]:
        done, pending = await asyncio.wait(
            futures, timeout=max(deadline - time.monotonic(), 0.0), return_when=asyncio.FIRST_EXCEPTION
        )
        for future in pending:
            future.cancel()  # traces not yet scored are skipped by the batcher and the probe thread
        failures = [future.exception() for future in done if future.exception() is not None]
        if failures:
            for future in futures:
                future.cancel()  # the request fails: its other traces need no probe work
            first = failures[0]
            if isinstance(first, ServiceFailure) and not isinstance(first, DeadlinePassed):
                raise first
            if not isinstance(first, ServiceFailure):
                raise ScoringFailed(f"scoring failed: {first}")
        if pending or failures:
            raise self._deadline_passed()
        return [future.result() for future in futures]

    def _deadline_passed(self) -> DeadlinePassed:
        self._metrics.rejected.labels(reason="deadline").inc()
        return DeadlinePassed(
            f"not scored within the deadline of {self._settings.request_timeout_s}s (MIG_REQUEST_TIMEOUT_S)"
        )

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
            probe_identity=annotation.probe_identity,
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


def _too_many_steps(field: str, found: int, limit: int) -> InvalidInput:
    return InvalidInput.for_field(
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
            raise InvalidInput.for_field(
                f"{where}.{name}", f"not valid Unicode text (a lone surrogate at position {error.start})"
            ) from error
