"""What the probe thread does with a micro-batch: probe scoring, outcome checks, reward math.

Batch invariance: with ``exact=True`` every trace gets its own ``probe.score([trace])`` call, i.e. its own
forward pass with no padding and no neighbours, so its numbers are bit-identical whether it came alone or
in a crowd (padded batches change GEMM and attention shapes and move results in the last float bits;
measured on SmolLM2 in float32: up to 1.3e-5 in per-token log-probs). ``exact=False`` hands the whole batch
to the probe, which packs it into shared forward passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from mig_annotator.mig.engine import Annotator
from mig_annotator.mig.probe.base import ProbeResult
from mig_annotator.schemas import TraceAnnotation
from mig_annotator.service.batcher import Deliver, ProbeFailure, ScoringJob
from mig_annotator.service.errors import ProbeUnavailable, ServiceError
from mig_annotator.service.metrics import ServiceMetrics
from mig_annotator.service.outcome import OutcomeChecker, OutcomeCheckError
from mig_annotator.service.runtime import ProbeRuntime

logger = logging.getLogger("mig.service")


class BatchScorer:
    """Runs one micro-batch (in the probe thread) and delivers each trace's annotation."""

    def __init__(
        self, runtime: ProbeRuntime, outcomes: OutcomeChecker, *, exact: bool, metrics: ServiceMetrics
    ) -> None:
        self._runtime = runtime
        self._outcomes = outcomes
        self._exact = exact
        self._metrics = metrics

    def __call__(self, jobs: Sequence[ScoringJob], deliver: Deliver) -> None:
        annotator = self._runtime.annotator
        if annotator is None:
            raise ProbeFailure("the probe is not loaded")
        probe_seconds = 0.0
        try:
            if self._exact:
                for job in jobs:
                    if job.future.done():  # its request gave up while the batch ran
                        continue
                    (result,), seconds = self._score(annotator, [job])
                    probe_seconds += seconds
                    deliver(job, self._finish(annotator, job, result))
            else:
                live = [job for job in jobs if not job.future.done()]
                results, probe_seconds = self._score(annotator, live)
                for job, result in zip(live, results, strict=True):
                    deliver(job, self._finish(annotator, job, result))
        finally:
            self._metrics.probe_seconds.observe(probe_seconds)

    def _score(self, annotator: Annotator, jobs: Sequence[ScoringJob]) -> tuple[list[ProbeResult], float]:
        if not jobs:
            return [], 0.0
        started = time.perf_counter()
        try:
            results = annotator.probe.score([job.prepared.sequence for job in jobs])
        except (
            Exception
        ) as error:  # ProbeError, device faults, a backend gone: this batch fails, not the service
            raise ProbeFailure(f"{type(error).__name__}: {error}") from error
        self._metrics.tokens_forwarded.inc(sum(result.tokens_forwarded for result in results))
        return results, time.perf_counter() - started

    def _finish(
        self, annotator: Annotator, job: ScoringJob, result: ProbeResult
    ) -> TraceAnnotation | Exception:
        trace = job.prepared.trace
        answer = job.prepared.segmented.answer
        try:
            outcome = self._outcomes.check(answer.text if answer else None, trace.reference_answer)
        except OutcomeCheckError as error:
            return ProbeUnavailable(f"answers cannot be checked right now: {error}")
        try:
            return annotator.finish(job.prepared, result, job.config, outcome=outcome)
        except Exception as error:  # a bug: this trace fails alone
            logger.exception("finishing trace %r failed", trace.id)
            return ServiceError(f"scoring trace {trace.id!r} failed: {error}")
