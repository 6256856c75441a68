"""The parts of one running service, built and started together by the app's lifespan, stopped together.

Every part exists once :meth:`ServiceComponents.start` returns; none is filled in later, so routes never
check for a missing part. (The audit log is None only when the settings switch it off.) The probe itself
loads in the background: until it is ready the runtime answers ``NotReady``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.probe.base import Probe
from mig_annotator.engine.verify import ProcessVerifier, VerifierUnavailable
from mig_annotator.service.annotation_service import AnnotationService
from mig_annotator.service.audit import AuditLog
from mig_annotator.service.auth import ApiKeyAuthenticator
from mig_annotator.service.batcher import MicroBatcher
from mig_annotator.service.metrics import ServiceMetrics
from mig_annotator.service.probe_budget import ProbeBudget
from mig_annotator.service.reload import ProbeReloader
from mig_annotator.service.runtime import ProbeRuntime
from mig_annotator.service.scorer import BatchScorer
from mig_annotator.service.settings import ServiceSettings

logger = logging.getLogger("mig.service")


@dataclass
class ServiceComponents:
    settings: ServiceSettings
    metrics: ServiceMetrics
    verifier: ProcessVerifier
    runtime: ProbeRuntime
    audit: AuditLog | None
    authenticator: ApiKeyAuthenticator
    batcher: MicroBatcher
    annotations: AnnotationService
    reloader: ProbeReloader
    budget: ProbeBudget
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls, settings: ServiceSettings, metrics: ServiceMetrics, probe: Probe | None
    ) -> ServiceComponents:
        """Build and start every part; the probe (unless given) and the verifier warm up in the background."""
        audit = (
            AuditLog(
                settings.audit_dir,
                segment_rows=settings.audit_segment_rows,
                flush_s=settings.audit_flush_s,
                max_pending=settings.audit_max_pending_rows,
                metrics=metrics,
            )
            if settings.audit_enabled
            else None
        )
        verifier = ProcessVerifier(
            workers=settings.verifier_workers,
            timeout_s=settings.outcome_timeout_s,
            on_timeout=metrics.outcome_timeouts.inc,
        )
        runtime = ProbeRuntime(settings.probe, settings.scoring, verifier, probe)
        budget = ProbeBudget(settings)
        batcher = MicroBatcher(
            BatchScorer(runtime, exact=settings.exact, metrics=metrics, budget=budget),
            max_tokens=settings.micro_batch_tokens,
            max_wait_s=settings.batch_max_wait_ms / 1000.0,
            max_queue=settings.queue_max_traces,
            metrics=metrics,
        )
        components = cls(
            settings=settings,
            metrics=metrics,
            verifier=verifier,
            runtime=runtime,
            audit=audit,
            authenticator=ApiKeyAuthenticator(settings.api_key_ids()),
            batcher=batcher,
            annotations=AnnotationService(settings, runtime, batcher, audit, metrics, budget),
            reloader=ProbeReloader(runtime, settings.reload_timeout_s),
            budget=budget,
        )
        if audit is not None:
            audit.start()
        batcher.start()
        if runtime.annotator is not None:  # a probe given to create_app: measured before serving
            await components._calibrate(runtime.annotator)
        components._background.append(asyncio.create_task(components._load(), name="mig-load-probe"))
        return components

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.batcher.stop()
        self.annotations.close()
        await asyncio.to_thread(self.runtime.close)
        await asyncio.to_thread(self.verifier.close)
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)

    async def _load(self) -> None:
        await asyncio.gather(self._start_verifier(), self.runtime.load())
        annotator = self.runtime.annotator
        if annotator is not None:
            logger.info("probe ready: %s (%s)", annotator.probe.model_id, self.runtime.identity)
            if not self.budget.calibrated:
                await self._calibrate(annotator)

    async def _calibrate(self, annotator: Annotator) -> None:
        """The probe's calibration pass (:meth:`ProbeBudget.calibrate`); /readyz waits for it."""
        try:
            await asyncio.to_thread(self.budget.calibrate, annotator, self.runtime.scoring_lock)
        except Exception:  # the budget keeps its default rate and follows the probe while serving
            logger.exception("the probe's calibration pass failed")

    async def _start_verifier(self) -> None:
        try:
            await asyncio.to_thread(self.verifier.start)
        except VerifierUnavailable as error:  # checks try to start workers again; until then they answer 503
            logger.error("%s", error)
