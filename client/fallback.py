"""What a trainer adapter answers when a trace has no annotation, or the service stays down.

A trace the service could not score (its ``TraceFailure``: invalid, or unfinished after every resend) always
gets ``RewardFallback.reward`` and is counted: one bad completion must not crash a training step. When the
whole service is unavailable (:class:`MigServiceUnavailable`: unreachable, busy or failing after every retry,
or past the call's deadline) the user chooses: ``on_service_down="raise"`` (the default: the step fails
loudly) or ``"fallback"`` (every completion of the call gets the fallback reward, with a warning, counted).
The counters are for the trainer's logs: ``stats()`` gives them as floats.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

from mig_annotator.client.http import MigServiceUnavailable, TraceResult
from mig_annotator.schemas import TraceAnnotation

__all__ = ["OnServiceDown", "RewardFallback"]

logger = logging.getLogger("mig.client")

OnServiceDown = Literal["raise", "fallback"]


class RewardFallback:
    """The fallback reward, the policy when the service is down, and thread-safe counters."""

    def __init__(self, reward: float = 0.0, on_service_down: OnServiceDown = "raise") -> None:
        if on_service_down not in ("raise", "fallback"):
            raise ValueError(f"on_service_down must be 'raise' or 'fallback', got {on_service_down!r}")
        self.reward = float(reward)
        self.on_service_down: OnServiceDown = on_service_down
        self._lock = threading.Lock()
        self.failed_traces = 0
        self.service_down_calls = 0
        self.fallback_rewards = 0

    def stats(self) -> dict[str, float]:
        """The counters: ``mig/failed_traces``, ``mig/service_down_calls``, ``mig/fallback_rewards``."""
        with self._lock:
            return {
                "mig/failed_traces": float(self.failed_traces),
                "mig/service_down_calls": float(self.service_down_calls),
                "mig/fallback_rewards": float(self.fallback_rewards),
            }

    def scores(
        self, results: Sequence[TraceResult], score: Callable[[TraceAnnotation], float]
    ) -> list[float]:
        """``score(annotation)`` per trace; the fallback reward (counted, logged) where a trace failed."""
        out: list[float] = []
        failed = []
        for result in results:
            if isinstance(result, TraceAnnotation):
                out.append(score(result))
            else:
                out.append(self.reward)
                failed.append(result)
        if failed:
            with self._lock:
                self.failed_traces += len(failed)
                self.fallback_rewards += len(failed)
            logger.warning(
                "%d of %d traces got the fallback reward %s; first: %s: %s",
                len(failed),
                len(results),
                self.reward,
                failed[0].field,
                failed[0].message,
            )
        return out

    def service_down(self, error: MigServiceUnavailable, count: int) -> list[float]:
        """Raise ``error``, or (``on_service_down="fallback"``) warn and give all ``count`` traces the
        fallback reward."""
        if self.on_service_down == "raise":
            raise error
        with self._lock:
            self.service_down_calls += 1
            self.fallback_rewards += count
        warnings.warn(
            f"the MIG reward service is unavailable ({error}); {count} completions get the fallback reward "
            f"{self.reward}",
            RuntimeWarning,
            stacklevel=3,
        )
        return [self.reward] * count
