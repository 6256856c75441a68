"""The parts of one running service, built from its settings, started and stopped by the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from mig_annotator.mig.probe.base import Probe
from mig_annotator.service.annotation_service import AnnotationService
from mig_annotator.service.audit import AuditLog
from mig_annotator.service.auth import ApiKeyAuthenticator
from mig_annotator.service.batcher import MicroBatcher
from mig_annotator.service.metrics import ServiceMetrics
from mig_annotator.service.outcome import OutcomeChecker, OutcomeCheckError
from mig_annotator.service.runtime import ProbeRuntime
from mig_annotator.service.scorer import BatchScorer
from mig_annotator.service.settings import ServiceSettings

logger = logging.getLogger("mig.service")


@dataclass
class ServiceComponents:
    settings: ServiceSettings
    metrics: ServiceMetrics
    runtime: ProbeRuntime
    outcomes: OutcomeChecker
    audit: AuditLog | None
    authenticator: ApiKeyAuthenticator
    batcher: MicroBatcher | None = None
    annotations: AnnotationService | None = None
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: ServiceSettings, probe: Probe | None) -> ServiceComponents:
        metrics = ServiceMetrics()
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
        return cls(
            settings=settings,
            metrics=metrics,
            runtime=ProbeRuntime(settings.probe, settings.scoring, probe),
            outcomes=OutcomeChecker(settings.outcome_timeout_s, on_timeout=metrics.outcome_timeouts.inc),
            audit=audit,
            authenticator=ApiKeyAuthenticator(settings.api_key_ids()),
        )

    async def start(self) -> None:
        """Start everything; the probe loads in the background (``/readyz`` says when it is ready)."""
        settings = self.settings
        if self.audit is not None:
            self.audit.start()
        scorer = BatchScorer(self.runtime, self.outcomes, exact=settings.exact, metrics=self.metrics)
        self.batcher = MicroBatcher(
            scorer,
            max_tokens=settings.batch_max_tokens,
            max_wait_s=settings.batch_max_wait_ms / 1000.0,
            max_queue=settings.queue_max_traces,
            metrics=self.metrics,
        )
        self.batcher.start()
        self.annotations = AnnotationService(settings, self.runtime, self.batcher, self.audit, self.metrics)
        self._background.append(asyncio.create_task(self._load(), name="mig-load-probe"))

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.batcher is not None:
            await self.batcher.stop()
        if self.annotations is not None:
            self.annotations.close()
        await asyncio.to_thread(self.outcomes.close)
        await asyncio.to_thread(self.runtime.close)
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)

    async def _load(self) -> None:
        await asyncio.gather(self._start_outcome_worker(), self.runtime.load())
        if self.runtime.annotator is not None:
            logger.info("probe ready: %s (%s)", self.runtime.annotator.probe.model_id, self.runtime.revision)

    async def _start_outcome_worker(self) -> None:
        try:
            await asyncio.to_thread(self.outcomes.start)
        except OutcomeCheckError as error:  # checks try to start it again; until then they answer 503
            logger.error("%s", error)
