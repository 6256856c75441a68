"""The per-request budget of forwarded probe tokens, from the throughput of the probe being served.

A request is admitted when its planned probe tokens fit what the probe forwards within the request's
deadline: ``tokens per second x MIG_REQUEST_TIMEOUT_S``. The rate is measured, not assumed: a short
calibration pass when the probe is ready (:meth:`ProbeBudget.calibrate`: a few synthetic traces scored
under the scoring lock), then every engine call the service makes (:meth:`ProbeBudget.observe`: tokens
forwarded over the probe's own seconds, from its stats, the last :data:`WINDOW_CALLS` calls; the answer
checks, which overlap the probe, are not counted). The budget is bounded
(:data:`MIN_BUDGET_TOKENS` .. :data:`MAX_BUDGET_TOKENS`). ``MIG_MAX_REQUEST_PROBE_TOKENS`` (a budget) and
``MIG_PROBE_TOKENS_PER_SECOND`` (a rate) still win when set. Until the first measurement (a probe given to
``create_app`` serves before its calibration ends) the rate is :data:`DEFAULT_TOKENS_PER_SECOND`.

The calibration also measures how many probe tokens the probe's tokenizer makes of a byte of trace text
under the rule of :mod:`schemas.probe_cost`, which ``GET /v1/info`` advertises for clients to size their
requests with.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Literal

from mig_annotator.engine.annotator import Annotator, PreparedTrace
from mig_annotator.schemas import Trace
from mig_annotator.schemas.probe_cost import estimated_probe_tokens
from mig_annotator.service.settings import ServiceSettings

logger = logging.getLogger("mig.service")

DEFAULT_TOKENS_PER_SECOND = 400.0
"""The rate used before any measurement: SmolLM2-135M on 1 to 2 CPU threads."""
MIN_BUDGET_TOKENS = 4096
MAX_BUDGET_TOKENS = 100_000_000
WINDOW_CALLS = 64
CALIBRATION_TRACES = 4

BudgetSource = Literal["setting", "measured", "default"]


class ProbeBudget:
    """What one request may ask of the probe; thread-safe (the probe thread observes, the loop reads)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._set_budget = settings.max_request_probe_tokens
        self._set_rate = settings.probe_tokens_per_second
        self._timeout_s = settings.request_timeout_s
        self._calls: deque[tuple[int, float]] = deque(maxlen=WINDOW_CALLS)
        self._lock = threading.Lock()
        self.tokens_per_byte: float | None = None
        self.calibrated = False  # set once the calibration pass has run (or failed)

    @property
    def source(self) -> BudgetSource:
        if self._set_budget is not None or self._set_rate is not None:
            return "setting"
        return "measured" if self.measured_tokens_per_second is not None else "default"

    @property
    def measured_tokens_per_second(self) -> float | None:
        with self._lock:
            tokens = sum(tokens for tokens, _ in self._calls)
            seconds = sum(seconds for _, seconds in self._calls)
        return tokens / seconds if tokens and seconds > 0 else None

    @property
    def tokens_per_second(self) -> float:
        """The rate the budget comes from: the setting, else measured, else the default."""
        if self._set_rate is not None:
            return self._set_rate
        measured = self.measured_tokens_per_second
        return measured if measured is not None else DEFAULT_TOKENS_PER_SECOND

    @property
    def tokens(self) -> int:
        """Forwarded probe tokens one request may plan."""
        if self._set_budget is not None:
            return self._set_budget
        budget = int(self.tokens_per_second * self._timeout_s)
        return min(MAX_BUDGET_TOKENS, max(MIN_BUDGET_TOKENS, budget))

    def observe(self, tokens: int, seconds: float) -> None:
        """One engine call: ``tokens`` forwarded in ``seconds`` (calls that forwarded nothing are skipped)."""
        if tokens > 0 and seconds > 0:
            with self._lock:
                self._calls.append((tokens, seconds))

    def calibrate(self, annotator: Annotator, lock: threading.Lock) -> None:
        """Score a few synthetic traces (holding ``lock``, the runtime's scoring lock) and record the rate
        and the tokens per byte of the rule the clients estimate with."""
        try:
            self._calibrate(annotator, lock)
        finally:
            self.calibrated = True

    def _calibrate(self, annotator: Annotator, lock: threading.Lock) -> None:
        traces = calibration_traces()
        planned = [item for item in annotator.plan(traces) if isinstance(item, PreparedTrace)]
        if not planned:
            return
        config = annotator.default_config
        estimates = [
            estimated_probe_tokens(item.trace.model_dump(mode="json"), config, 1.0) for item in planned
        ]
        self.tokens_per_byte = max(
            item.probe_tokens / max(1, e) for item, e in zip(planned, estimates, strict=True)
        )
        stats = annotator.probe.stats
        with lock:
            tokens_before, seconds_before = stats.tokens_forwarded, stats.seconds
            annotator.annotate_many(planned)
            forwarded, seconds = stats.tokens_forwarded - tokens_before, stats.seconds - seconds_before
        self.observe(forwarded, seconds)
        logger.info(
            "probe calibration: %d tokens in %.3f s (%.0f tokens/s); request budget %d tokens, "
            "%.3f tokens per byte",
            forwarded,
            seconds,
            forwarded / max(seconds, 1e-9),
            self.tokens,
            self.tokens_per_byte,
        )


def calibration_traces() -> list[Trace]:
    """A few GSM8K-like traces (numbers, prose, several steps): the calibration pass's work."""
    traces = []
    for index in range(CALIBRATION_TRACES):
        start, step = 40 + 7 * index, 3 + index
        lines = [
            f"The shop starts the day with {start} apples and sells {step} apples every hour.",
            f"After {index + 2} hours it has sold {step} * {index + 2} = {step * (index + 2)} apples.",
            f"So {start} - {step * (index + 2)} = {start - step * (index + 2)} apples are left on the shelf.",
            "A delivery then brings twelve more apples, which the owner counts twice to be sure.",
            f"That makes {start - step * (index + 2)} + 12 = {start - step * (index + 2) + 12} apples.",
        ]
        answer = start - step * (index + 2) + 12
        traces.append(
            Trace(
                id=f"calibration-{index}",
                question=f"A shop has {start} apples, sells {step} an hour for {index + 2} hours, then "
                "receives 12 more. How many apples does it have?",
                completion="\n".join(lines) + f"\nThe answer is {answer}.",
                reference_answer=str(answer),
            )
        )
    return traces
