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
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ValidationError

from mig_annotator.engine.annotator import Annotator, PreparedTrace, TraceError
from mig_annotator.engine.probe.base import CancelCheck
from mig_annotator.engine.segment import SegmentationCancelled
from mig_annotator.schemas import ScoringConfig, Trace, TraceAnnotation
from mig_annotator.schemas.api import AuditRecord, FieldError, TraceFailure
from mig_annotator.service.audit import AuditLog
from mig_annotator.service.batcher import MicroBatcher
from mig_annotator.service.failures import (
    DeadlinePassed,
    InvalidInput,
    NotReady,
    OverProbeBudget,
    ScoringFailed,
    ServiceFailure,
    TooManyTraces,
    field_path,
)
from mig_annotator.service.metrics import ServiceMetrics
from mig_annotator.service.probe_budget import ProbeBudget
from mig_annotator.service.request_log import RequestTally
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
    tally: RequestTally | None = None


class AnnotationService:
    def __init__(
        self,
        settings: ServiceSettings,
        runtime: ProbeRuntime,
        batcher: MicroBatcher,
        audit: AuditLog | None,
        metrics: ServiceMetrics,
        budget: ProbeBudget | None = None,
    ) -> None:
        self._settings = settings
        self._budget = budget if budget is not None else ProbeBudget(settings)
        self._runtime = runtime
        self._batcher = batcher
        self._audit = audit
        self._metrics = metrics
        self._plan_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mig-plan")

    def close(self) -> None:
        """Stop planning: queued plans are dropped and running ones end at their next check (their requests
        were cancelled, which sets their ``cancelled`` check), without holding the shutdown."""
        self._plan_executor.shutdown(wait=False, cancel_futures=True)

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

    def check_trace_count(self, count: int, field: str) -> None:
        """:class:`TooManyTraces` (413) when a request holds more traces than one may (valid or not)."""
        limit = self._settings.max_traces_per_request
        if count > limit:
            self._metrics.rejected.labels(reason="too_many_traces").inc()
            raise TooManyTraces.for_field(
                field,
                f"{count} traces, over the limit of {limit} per request (MIG_MAX_TRACES_PER_REQUEST)",
            )

    async def annotate(
        self,
        traces: Sequence[Trace],
        config: ScoringConfig,
        context: CallContext,
        field: str = "traces",
        *,
        strict: bool = True,
        positions: Sequence[int] | None = None,
    ) -> list[TraceAnnotation | TraceFailure]:
        """One result per trace, in input order, or a :class:`ServiceFailure` saying why the request failed.

        ``strict``: any trace that cannot be scored fails the request (:class:`InvalidInput`, or
        :class:`DeadlinePassed`). Otherwise such a trace gets a :class:`TraceFailure` in its place and the
        others are scored (``positions``: each trace's index in the request, for the errors' field names
        and indices, when not 0..n-1); the request still fails as a whole when the probe fails, when the
        queue is full, or when the deadline passes before any of its traces was scored.
        """
        annotator = self._runtime.annotator
        if annotator is None:
            raise NotReady(self._runtime.error or "the probe is still loading", retry_after_s=5)
        self.check_trace_count(len(traces), field)
        deadline = context.received_monotonic + self._settings.request_timeout_s
        loop = asyncio.get_running_loop()
        at = list(positions) if positions is not None else list(range(len(traces)))
        self._check_image_budget(traces, field, at)
        ended = threading.Event()  # set once the request no longer waits for its plan

        def request_ended() -> bool:
            return ended.is_set() or time.monotonic() > deadline

        planning = loop.run_in_executor(
            self._plan_executor, self._plan, annotator, traces, config, field, at, request_ended
        )
        try:
            planned = await asyncio.wait_for(planning, timeout=max(deadline - time.monotonic(), 0.0))
        except (TimeoutError, SegmentationCancelled):
            raise self._deadline_passed() from None
        finally:  # timed out, or cancelled (the client left, the server stops): the planning thread stops
            ended.set()
        invalid = [item for item in planned if isinstance(item, TraceFailure)]
        if invalid and strict:
            fields = [FieldError(field=item.field, message=item.message) for item in invalid]
            raise InvalidInput("; ".join(f"{f.field}: {f.message}" for f in fields[:10]), fields)
        planned = self._check_probe_budget(planned, field, at, strict=strict)
        # the answer checks start now: they run while the traces wait for the probe
        planned = annotator.check_answers(planned, deadline=deadline)
        good = [item for item in planned if isinstance(item, PreparedTrace)]
        if context.tally is not None:
            context.tally.planned_tokens += sum(item.probe_tokens for item in good)
        futures = self._batcher.submit(good, deadline) if good else []
        scored = iter(await self._wait(futures, deadline, strict=strict))
        results: list[TraceAnnotation | TraceFailure] = []
        for index, item in zip(at, planned, strict=True):
            result = item if isinstance(item, TraceFailure) else next(scored)
            if isinstance(result, TraceFailure) and item is not result:  # failed while scored
                where = field if field == "trace" else f"{field}[{index}]"
                named = f"{where}.{result.field}" if result.field else where
                result = result.model_copy(update={"index": index, "field": named})
            results.append(result)
        latency_ms = (time.monotonic() - context.received_monotonic) * 1000.0
        annotated = [(t, r) for t, r in zip(traces, results, strict=True) if isinstance(r, TraceAnnotation)]
        self._metrics.traces_annotated.inc(len(annotated))
        self._metrics.observe_annotations([annotation for _, annotation in annotated])
        if context.tally is not None:
            context.tally.forwarded_tokens += sum(annotation.tokens_forwarded for _, annotation in annotated)
        for failure in (r for r in results if isinstance(r, TraceFailure)):
            self._metrics.trace_failures.labels(code=failure.code).inc()
        if self._audit is not None and annotated:
            self._audit.append(
                [self._audit_record(trace, item, context, latency_ms) for trace, item in annotated]
            )
        return results

    def _check_probe_budget(
        self,
        planned: Sequence[PreparedTrace | TraceFailure],
        field: str,
        positions: Sequence[int],
        *,
        strict: bool,
    ) -> list[PreparedTrace | TraceFailure]:
        """413 before any probe work when the request's planned probe tokens (the engine's estimate: each
        trace forwarded once plus every answer prefix, and each windowed step as one full-context pass)
        are over the per-request budget; the field named is the costliest trace. Unless ``strict``, a trace
        over the budget on its own fails alone in its place (it could never be admitted) and the rest are
        checked without it."""
        budget = self._budget.tokens
        checked: list[PreparedTrace | TraceFailure] = []
        for index, item in zip(positions, planned, strict=True):
            if not strict and isinstance(item, PreparedTrace) and item.probe_tokens > budget:
                problem = FieldError(
                    field=_reasoning_field(field, index, item), message=_over_budget(item, item, budget)
                )
                checked.append(_invalid(index, problem))
            else:
                checked.append(item)
        good = [item for item in checked if isinstance(item, PreparedTrace)]
        total = sum(item.probe_tokens for item in good)
        if total <= budget:
            return checked
        self._metrics.rejected.labels(reason="probe_budget").inc()
        index, costliest = max(
            (
                (index, item)
                for index, item in zip(positions, checked, strict=True)
                if isinstance(item, PreparedTrace)
            ),
            key=lambda pair: pair[1].probe_tokens,
        )
        raise OverProbeBudget.for_field(
            _reasoning_field(field, index, costliest), _over_budget(costliest, total, budget)
        )

    def _check_image_budget(self, traces: Sequence[Trace], field: str, positions: Sequence[int]) -> None:
        """413 before any image is decoded when the request's images (their sizes read from their bytes,
        each counted for every trace that holds it) are over the per-request pixel budget; the field named
        is the trace with the most pixels."""
        pixels = [sum(image.width * image.height for image in trace.images) for trace in traces]
        budget = self._settings.request_image_pixels
        total = sum(pixels)
        if total <= budget:
            return
        self._metrics.rejected.labels(reason="image_budget").inc()
        slot = max(range(len(traces)), key=pixels.__getitem__)
        where = field if field == "trace" else f"{field}[{positions[slot]}]"
        raise OverProbeBudget.for_field(
            f"{where}.images",
            f"the request's images hold {total} pixels to prepare (this trace's {len(traces[slot].images)} "
            f"images {pixels[slot]}), over the limit of {budget} per request (MIG_MAX_REQUEST_IMAGE_PIXELS; "
            "by default MIG_IMAGE_PIXELS_PER_SECOND x MIG_REQUEST_TIMEOUT_S, what the deadline can cover); "
            "send fewer traces or smaller images",
        )

    def _plan(
        self,
        annotator: Annotator,
        traces: Sequence[Trace],
        config: ScoringConfig,
        field: str,
        positions: Sequence[int],
        cancelled: CancelCheck | None = None,
    ) -> list[PreparedTrace | TraceFailure]:
        """Plan every trace through the engine and check the service's per-trace limits.

        A bad trace gets a :class:`TraceFailure` in its place naming its field (``traces[3].completion``).
        ``cancelled``: once True (the request ended), the engine abandons the planning.
        """
        settings = self._settings
        planned: list[PreparedTrace | TraceFailure | None] = [None] * len(traces)
        checked: list[tuple[int, int, str, Trace]] = []
        for slot, (index, trace) in enumerate(zip(positions, traces, strict=True)):
            where = field if field == "trace" else f"{field}[{index}]"
            steps_cap = settings.max_steps_per_trace
            if steps_cap is not None and trace.steps is not None and len(trace.steps) > steps_cap:
                too_many = _too_many_steps(f"{where}.steps", len(trace.steps), steps_cap)
                planned[slot] = _invalid(index, too_many.fields[0])
                continue
            checked.append((slot, index, where, trace))
        plans = annotator.plan([trace for *_, trace in checked], config, cancelled=cancelled)
        for (slot, index, where, _), item in zip(checked, plans, strict=True):
            if isinstance(item, TraceError):
                problem = FieldError(field=f"{where}.{item.field}", message=item.problem)
                planned[slot] = _invalid(index, problem)
                continue
            over = self._over_limit(item, where)
            planned[slot] = item if over is None else _invalid(index, over)
        return [item for item in planned if item is not None]

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
        self, futures: list[asyncio.Future[TraceAnnotation]], deadline: float, *, strict: bool
    ) -> list[TraceAnnotation | TraceFailure]:
        """The scored traces in order. Unless ``strict``, a trace that is unfinished at the deadline, or
        that the engine found bad while scoring it, gets its failure in place (the request still fails
        when none finished in time, or on any other failure)."""
        if not futures:
            return []
        try:
            done, pending = await asyncio.wait(
                futures,
                timeout=max(deadline - time.monotonic(), 0.0),
                return_when=asyncio.FIRST_EXCEPTION if strict else asyncio.ALL_COMPLETED,
            )
        except asyncio.CancelledError:  # the client left or the server stops: its traces need no probe work
            for future in futures:
                future.cancel()
            raise
        for future in pending:
            future.cancel()  # traces not yet scored are skipped by the batcher and the probe thread
        errors = {future: future.exception() for future in done if future.exception() is not None}
        late = {future for future, error in errors.items() if isinstance(error, DeadlinePassed)} | pending
        bad = {future for future, error in errors.items() if isinstance(error, InvalidInput) and not strict}
        other = [error for future, error in errors.items() if future not in late and future not in bad]
        if other:
            for future in futures:
                future.cancel()  # the request fails: its other traces need no probe work
            first = other[0]
            if isinstance(first, ServiceFailure):
                raise first
            raise ScoringFailed(f"scoring failed: {first}")
        finished = [future for future in futures if future in done and future not in errors]
        if late and (strict or not finished):
            raise self._deadline_passed()
        if late:
            self._metrics.rejected.labels(reason="deadline_partial").inc()
        message = (
            f"not scored within the deadline of {self._settings.request_timeout_s}s (MIG_REQUEST_TIMEOUT_S); "
            "send it again"
        )
        results: list[TraceAnnotation | TraceFailure] = []
        for future in futures:
            if future in late:
                results.append(TraceFailure(index=0, field="", message=message, code="deadline_exceeded"))
            elif future in bad:
                problem = errors[future]
                assert isinstance(problem, InvalidInput)
                field = problem.fields[0].field if problem.fields else ""
                text = problem.fields[0].message if problem.fields else problem.message
                results.append(TraceFailure(index=0, field=field, message=text, code="invalid_trace"))
            else:
                results.append(future.result())
        return results

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
    """SHA-256 of the trace's text: question, steps or completion, and reference answer (no id, metadata),
    and of the question's images by their bytes' sha256 (never their paths); a text-only trace's digest is
    what it was before traces held images."""
    text: dict[str, object] = {
        "question": trace.question,
        "steps": trace.steps,
        "completion": trace.completion,
        "reference_answer": trace.reference_answer,
    }
    if trace.images:
        text["images"] = [image.sha256 for image in trace.images]
    canonical = json.dumps(text, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _reasoning_field(field: str, index: int, item: PreparedTrace) -> str:
    where = field if field == "trace" else f"{field}[{index}]"
    return f"{where}.{'steps' if item.trace.steps is not None else 'completion'}"


def _over_budget(costliest: PreparedTrace, total: PreparedTrace | int, budget: int) -> str:
    """Why a request (``total``: its planned tokens) or a trace alone (``total``: that trace) is over."""
    windows = f", {len(costliest.windows)} windowed steps" if costliest.windows else ""
    if isinstance(total, PreparedTrace):
        needs = f"the trace needs about {costliest.probe_tokens} forwarded probe tokens{windows}"
    else:
        needs = (
            f"the request needs about {total} forwarded probe tokens (this trace {costliest.probe_tokens}"
            f"{windows})"
        )
    return (
        f"{needs}, over the limit of {budget} per request (MIG_MAX_REQUEST_PROBE_TOKENS; by default "
        "the probe's measured tokens per second x MIG_REQUEST_TIMEOUT_S, what the deadline can cover); send "
        "fewer or shorter traces, or a smaller context_limit policy than 'window'"
    )


def _invalid(index: int, problem: FieldError) -> TraceFailure:
    return TraceFailure(index=index, field=problem.field, message=problem.message, code="invalid_trace")


def _too_many_steps(field: str, found: int, limit: int) -> InvalidInput:
    return InvalidInput.for_field(
        field, f"{found} steps, over the limit of {limit} per trace (MIG_MAX_STEPS_PER_TRACE)"
    )
