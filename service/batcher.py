"""Micro-batching: traces from concurrent requests share probe work, each result goes back to its request.

Requests put their planned traces in a bounded queue (all of a request's traces, or none: :class:`QueueFull`).
One worker task takes batches from it, up to a token budget or after a short wait, and runs each batch off
the event loop in a single probe thread. Results come back one trace at a time to the future registered for
it before it was queued; a probe failure fails that batch's unfinished traces only, and the worker goes on.

GRPO groups stay whole: a run of consecutive queued traces of one group (same ``group_id``, or same question
when a trace has none) is never split across two batches when it fits the budget. When the next trace would
overflow the batch and continues the group of the trace before it, the batch ends before that group's first
trace and the whole group opens the next batch, where the probe forwards its question prompt once. Only a
group that starts a batch and is larger than the budget is split at the budget. Traces of one group that are
not consecutive in the queue (other traces arrived between them) are not gathered. Such a run is also what
exact batching scores as one unit (:func:`group_runs`, :mod:`mig_annotator.service.scorer`).

No probe work is started for a trace whose request is gone (its future is done: the client gave up or an
earlier trace of the request failed) or whose deadline has passed; such traces are dropped when a batch is
taken and skipped again just before each probe pass.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mig_annotator.engine.annotator import PreparedTrace
from mig_annotator.schemas import TraceAnnotation
from mig_annotator.service.failures import (
    DeadlinePassed,
    ProbeFailure,
    QueueFull,
    ScoringFailed,
    ServiceFailure,
    ShuttingDown,
)
from mig_annotator.service.metrics import ServiceMetrics

logger = logging.getLogger("mig.service")


@dataclass(eq=False)
class ScoringJob:
    """One trace on its way through the probe, the future its request waits on, and its deadline."""

    prepared: PreparedTrace
    deadline: float  # time.monotonic() instant after which nobody waits for the result
    future: asyncio.Future[TraceAnnotation] = field(repr=False)

    @property
    def tokens(self) -> int:
        return self.prepared.probe_tokens

    @property
    def group(self) -> tuple[str, str]:
        """The trace's GRPO group: its explicit ``group_id``, else its question text."""
        trace = self.prepared.trace
        return ("group_id", trace.group_id) if trace.group_id is not None else ("question", trace.question)

    def wanted(self) -> bool:
        """Whether anyone still waits for this trace: its request is there and its deadline not passed."""
        return not self.future.done() and time.monotonic() < self.deadline


Deliver = Callable[[ScoringJob, "TraceAnnotation | BaseException"], None]
"""Called from the probe thread with each job's result (or its own error) as soon as it is known."""

RunBatch = Callable[[Sequence[ScoringJob], Deliver], None]
"""Scores a batch in the probe thread; raises :class:`ProbeFailure` when the probe fails."""


class MicroBatcher:
    """Gathers traces into batches and runs them one batch at a time in a dedicated probe thread."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_tokens: int,
        max_wait_s: float,
        max_queue: int,
        metrics: ServiceMetrics,
    ) -> None:
        self._run_batch = run_batch
        self._max_tokens = max_tokens
        self._max_wait_s = max_wait_s
        self._max_queue = max_queue
        self._metrics = metrics
        self._pending: deque[ScoringJob] = deque()
        self._in_flight: set[ScoringJob] = set()  # in the running batch, not yet answered
        self._pending_tokens = 0
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mig-probe")
        self._worker: asyncio.Task[None] | None = None
        self._traces_per_second = 0.0

    @property
    def queued(self) -> int:
        """Traces waiting for the probe or in the batch it is running, not yet answered."""
        return len(self._pending) + len(self._in_flight)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="mig-micro-batcher")

    async def stop(self) -> None:
        """Fail every queued and running trace with :class:`ShuttingDown`, so the probe thread abandons its
        batch at its next forward pass (nobody wants it any more), then wait for that thread."""
        stopping = ShuttingDown("the service is shutting down")
        for job in [*self._in_flight, *self._pending]:
            _settle(job.future, stopping)
        self._pending.clear()
        self._pending_tokens = 0
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        self._set_depth()
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def submit(
        self, prepared: Sequence[PreparedTrace], deadline: float
    ) -> list[asyncio.Future[TraceAnnotation]]:
        """Queue a request's traces (all or none) and return one future per trace, in order."""
        if self._worker is None:
            raise ShuttingDown("the micro-batcher is not running")
        if self.queued + len(prepared) > self._max_queue:
            self._metrics.rejected.labels(reason="queue_full").inc()
            raise QueueFull(
                f"the queue holds {self.queued} traces and takes at most {self._max_queue} "
                f"(MIG_QUEUE_MAX_TRACES); this request brings {len(prepared)}",
                retry_after_s=self._retry_after_s(len(prepared)),
            )
        loop = asyncio.get_running_loop()
        jobs = [ScoringJob(item, deadline, loop.create_future()) for item in prepared]  # futures first
        self._pending.extend(jobs)
        self._pending_tokens += sum(job.tokens for job in jobs)
        self._set_depth()
        self._arrived.set()
        return [job.future for job in jobs]

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_batch()
            batch = self._take_batch()
            if not batch:
                continue
            self._metrics.batch_traces.observe(len(batch))
            self._metrics.batch_tokens.observe(sum(job.tokens for job in batch))
            started = time.perf_counter()

            self._in_flight.update(batch)

            def answered(job: ScoringJob, result: TraceAnnotation | BaseException) -> None:
                self._in_flight.discard(job)
                _settle(job.future, result)

            def deliver(job: ScoringJob, result: TraceAnnotation | BaseException) -> None:
                loop.call_soon_threadsafe(answered, job, result)

            try:
                await loop.run_in_executor(self._executor, self._run_batch, batch, deliver)
            except ProbeFailure as error:
                self._metrics.probe_failures.inc()
                logger.error("probe failed on a batch of %d traces: %s", len(batch), error)
                for job in batch:
                    loop.call_soon(_settle, job.future, ProbeFailure(f"the probe failed: {error.message}"))
            except ServiceFailure as error:
                logger.error("a batch of %d traces failed: %s", len(batch), error)
                for job in batch:
                    loop.call_soon(_settle, job.future, error)
            except Exception as error:  # a bug: fail this batch, keep serving
                logger.exception("scoring a batch failed")
                for job in batch:
                    loop.call_soon(_settle, job.future, ScoringFailed(f"scoring failed: {error}"))
            await asyncio.sleep(0)  # let the answers scheduled from the probe thread land first
            self._in_flight.clear()
            self._set_depth()
            self._record_rate(len(batch), time.perf_counter() - started)

    async def _wait_for_batch(self) -> None:
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = asyncio.get_running_loop().time() + self._max_wait_s
        while self._pending_tokens < self._max_tokens:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[ScoringJob]:
        """The next batch: queued traces in order up to the token budget (at least one), dropping those
        nobody waits for, and ending before a group that would not fit whole (see the module docstring)."""
        batch: list[ScoringJob] = []
        tokens = 0
        group_start = 0  # where the run of the last taken trace's group begins in the batch
        while self._pending:
            job = self._pending[0]
            if batch and tokens + job.tokens > self._max_tokens:
                if group_start > 0 and job.group == batch[-1].group:
                    self._put_back(batch[group_start:])
                    del batch[group_start:]
                break
            self._pending.popleft()
            self._pending_tokens -= job.tokens
            if not job.wanted():  # its request is gone or its deadline passed: no probe work for it
                self._metrics.dropped_traces.inc()
                _settle(job.future, DeadlinePassed("the request's deadline passed before its turn"))
                continue
            if batch and job.group != batch[-1].group:
                group_start = len(batch)
            batch.append(job)
            tokens += job.tokens
        self._set_depth()
        return batch

    def _put_back(self, jobs: Sequence[ScoringJob]) -> None:
        """Return taken jobs to the front of the queue, in their order."""
        self._pending.extendleft(reversed(jobs))
        self._pending_tokens += sum(job.tokens for job in jobs)

    def _set_depth(self) -> None:
        self._metrics.queue_depth.set(len(self._pending))

    def _record_rate(self, traces: int, seconds: float) -> None:
        rate = traces / max(seconds, 1e-6)
        self._traces_per_second = (
            rate if self._traces_per_second == 0 else 0.8 * self._traces_per_second + 0.2 * rate
        )

    def _retry_after_s(self, incoming: int) -> int:
        """Seconds until the queue has likely drained enough for ``incoming`` traces (1 to 60)."""
        if self._traces_per_second <= 0:
            return 1
        excess = self.queued + incoming - self._max_queue
        return int(min(60, max(1, math.ceil(max(excess, 1) / self._traces_per_second))))


def group_runs(jobs: Sequence[ScoringJob]) -> list[list[ScoringJob]]:
    """``jobs`` cut into runs of consecutive traces of one group (:attr:`ScoringJob.group`), in order."""
    runs: list[list[ScoringJob]] = []
    for job in jobs:
        if runs and job.group == runs[-1][-1].group:
            runs[-1].append(job)
        else:
            runs.append([job])
    return runs


def _settle(future: asyncio.Future[TraceAnnotation], result: TraceAnnotation | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
