"""The probe as the service holds it: loading in the background, ready, or failed; and its identity."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Literal

from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.probe import Probe, ProbeSettings, open_probe
from mig_annotator.engine.verify import AnswerVerifier
from mig_annotator.schemas import ProbeIdentity, ScoringConfig, Trace

logger = logging.getLogger("mig.service")

ProbeState = Literal["loading", "ready", "failed"]
_HEALTH_CHECK_TIMEOUT_S = 5.0


class ProbeRuntime:
    """Opens the probe off the event loop and hands out the :class:`Annotator` once it is ready."""

    def __init__(
        self,
        settings: ProbeSettings,
        scoring_defaults: ScoringConfig,
        verifier: AnswerVerifier,
        probe: Probe | None = None,
    ) -> None:
        self._settings = settings
        self._defaults = scoring_defaults
        self._verifier = verifier
        self._state: ProbeState = "loading"
        self._error: str | None = None
        self._annotator: Annotator | None = None
        self._identity: ProbeIdentity | None = None
        self._owns_probe = probe is None
        self.version = 0  # 1 once the first probe is installed, +1 per reload (service/reload.py)
        self.scoring_lock = threading.Lock()  # held for each micro-batch, and by a reload's weight swap
        if probe is not None:
            self._install(probe)

    @property
    def state(self) -> ProbeState:
        return self._state

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def annotator(self) -> Annotator | None:
        return self._annotator

    @property
    def identity(self) -> ProbeIdentity | None:
        """The ready probe's identity (None while loading or failed)."""
        return self._identity

    @property
    def backend(self) -> str:
        return self._settings.backend

    async def load(self) -> None:
        """Open the probe named by the settings (slow) unless one was given; failures are kept, not raised."""
        if self._annotator is not None:
            return
        try:
            probe = await asyncio.to_thread(open_probe, self._settings)
            await asyncio.to_thread(self._warm_up, Annotator(probe, self._defaults, verifier=self._verifier))
            await asyncio.to_thread(probe.identity)  # hashes the weights once (cached), off the event loop
        except Exception as error:
            logger.exception("the probe failed to load")
            self._state, self._error = "failed", f"the probe failed to load: {error}"
            return
        self._install(probe)

    async def health(self) -> str | None:
        """None when the probe can serve, else why not (remote backends ask their server)."""
        if self._state != "ready":
            return self._error or "the probe is loading"
        assert self._annotator is not None
        probe = self._annotator.probe
        if not probe.remote:
            return probe.health()
        try:
            problem = await asyncio.wait_for(asyncio.to_thread(probe.health), _HEALTH_CHECK_TIMEOUT_S)
        except Exception as error:
            return f"the probe is unreachable: {error!r}"
        return None if problem is None else f"the probe is unreachable: {problem}"

    def close(self) -> None:
        """Release the annotator, and the probe this runtime opened (an injected one is the caller's)."""
        if self._annotator is None:
            return
        self._annotator.close()
        if self._owns_probe:
            self._annotator.probe.close()

    def _install(self, probe: Probe) -> None:
        self._annotator = Annotator(probe, self._defaults, verifier=self._verifier)
        self._identity = probe.identity()
        self.version = 1
        self._state, self._error = "ready", None

    def reloaded(self, identity: ProbeIdentity) -> int:
        """Record new weights (call with :attr:`scoring_lock` held); returns the new version."""
        self._identity = identity
        self.version += 1
        return self.version

    @staticmethod
    def _warm_up(annotator: Annotator) -> None:
        """One tiny annotation, so the first request does not pay the backend's one-time set-up."""
        warm_up = Trace(id="warm-up", question="1 + 1?", steps=["1 + 1 = 2."], reference_answer="2")
        annotator.annotate_many([warm_up])
        annotator.close()  # its thread only: the verifier belongs to the runtime's owner
