"""What the probe thread does with a micro-batch: hand it to the engine and deliver each trace's result.

The engine (:meth:`Annotator.annotate_many`) runs the whole pipeline; this module only chooses how a batch
is cut into engine calls and turns engine outcomes into the service's failures.

Batch invariance: with ``exact=True`` every GRPO group gets its own engine call: a run of consecutive traces
of one group (same ``group_id``, else same question: :func:`group_runs`, the runs the batcher keeps whole),
so the probe forwards the group's question prompt once and scores v_0 once, and no trace of another group
is in the call. A trace's numbers therefore never depend on the crowd: they are bit-identical whatever
other groups were queued with it (padded batches change GEMM and attention shapes and move results in the
last float bits; measured on SmolLM2 in float32: up to 1.3e-5 in per-token log-probs), and equal to
scoring it alone up to that rounding (the group shares a header row and pads its rows together). When the
probe does not share group prefixes (:attr:`Probe.shares_group_prefixes` False, e.g. the transformers
probe with ``group_prefixes=false`` or outside ``packed`` mode), grouping saves nothing and every trace gets
its own engine call: bit-identical to scoring it alone. ``exact=False`` hands the whole batch to one engine
call, which packs it into shared forward passes.

Abandoned work stops between forward passes: the engine asks, before each pass, whether anyone still waits
for a trace of the engine call (:meth:`ScoringJob.wanted`: its request is there, its deadline not passed,
the service not stopping); when nobody does, the probe raises :class:`ProbeCancelled` and those traces are
answered :class:`DeadlinePassed` (nobody reads it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from mig_annotator.engine.annotator import AnnotationResult, Annotator
from mig_annotator.engine.probe.base import ProbeCancelled
from mig_annotator.engine.verify import VerifierUnavailable
from mig_annotator.schemas import TraceAnnotation
from mig_annotator.service.batcher import Deliver, ScoringJob, group_runs
from mig_annotator.service.failures import (
    AnswersUncheckable,
    DeadlinePassed,
    InvalidInput,
    NotReady,
    ProbeFailure,
    ServiceFailure,
)
from mig_annotator.service.metrics import ServiceMetrics
from mig_annotator.service.probe_budget import ProbeBudget
from mig_annotator.service.runtime import ProbeRuntime

logger = logging.getLogger("mig.service")


class BatchScorer:
    """Runs one micro-batch (in the probe thread) and delivers each trace's annotation or failure."""

    def __init__(
        self,
        runtime: ProbeRuntime,
        *,
        exact: bool,
        metrics: ServiceMetrics,
        budget: ProbeBudget | None = None,
    ) -> None:
        self._runtime = runtime
        self._exact = exact
        self._metrics = metrics
        self._budget = budget

    def __call__(self, jobs: Sequence[ScoringJob], deliver: Deliver) -> None:
        annotator = self._runtime.annotator
        if annotator is None:
            raise NotReady("the probe is not loaded")
        probe_seconds = 0.0
        lock = self._runtime.scoring_lock
        lock.acquire()  # a reload swaps the weights between batches, never within one
        try:
            if self._exact:
                grouped = annotator.probe.shares_group_prefixes
                for unit in group_runs(jobs) if grouped else [[job] for job in jobs]:
                    # traces whose request gave up, or whose deadline passed, while the batch ran: no work
                    live = [job for job in unit if job.wanted()]
                    results, seconds = self._annotate(annotator, live)
                    probe_seconds += seconds
                    for job, result in zip(live, results, strict=True):
                        deliver(job, self._outcome(result, self._runtime.version))
            else:
                live = [job for job in jobs if job.wanted()]
                results, probe_seconds = self._annotate(annotator, live)
                for job, result in zip(live, results, strict=True):
                    deliver(job, self._outcome(result, self._runtime.version))
        finally:
            lock.release()
            self._metrics.probe_seconds.observe(probe_seconds)

    def _annotate(
        self, annotator: Annotator, jobs: Sequence[ScoringJob]
    ) -> tuple[list[AnnotationResult | ServiceFailure], float]:
        if not jobs:
            return [], 0.0
        started = time.perf_counter()
        stats = annotator.probe.stats
        probe_tokens, probe_seconds = stats.tokens_forwarded, stats.seconds
        try:
            results = annotator.annotate_many(
                [job.prepared for job in jobs],
                deadline=max(job.deadline for job in jobs),
                cancelled=lambda: not any(job.wanted() for job in jobs),
            )
        except ProbeCancelled:
            self._metrics.cancelled_traces.inc(len(jobs))
            logger.info("abandoned the probe work of %d traces nobody waits for", len(jobs))
            abandoned = DeadlinePassed("the request's deadline passed or its client left")
            return [abandoned] * len(jobs), time.perf_counter() - started
        except VerifierUnavailable as error:
            raise AnswersUncheckable(f"answers cannot be checked right now: {error}") from error
        except Exception as error:  # ProbeError, device faults, a lost backend: the batch fails alone
            raise ProbeFailure(f"{type(error).__name__}: {error}") from error
        seconds = time.perf_counter() - started
        forwarded = sum(result.tokens_forwarded for result in results if isinstance(result, TraceAnnotation))
        self._metrics.tokens_forwarded.inc(forwarded)
        if self._budget is not None:  # the probe's own rate (its stats: the answer checks overlap it)
            self._budget.observe(stats.tokens_forwarded - probe_tokens, stats.seconds - probe_seconds)
        return results, seconds

    @staticmethod
    def _outcome(result: AnnotationResult | ServiceFailure, version: int) -> TraceAnnotation | ServiceFailure:
        if isinstance(result, TraceAnnotation):
            return result.model_copy(update={"probe_version": version})
        if isinstance(result, ServiceFailure):
            return result
        logger.warning("trace %r failed in scoring: %s", result.trace_id, result)
        if result.field == "probe":  # the probe's numbers for this trace were unusable
            return ProbeFailure(f"trace {result.trace_id!r}: {result.problem}")
        return InvalidInput.for_field(result.field, result.problem)
