"""The probe as the service holds it: loading in the background, ready, or failed; and its revision."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import struct
from pathlib import Path
from typing import Literal

from mig_annotator.mig.engine import Annotator
from mig_annotator.mig.probe.base import Probe
from mig_annotator.mig.probe.factory import ProbeSettings, open_probe
from mig_annotator.mig.verify import AnswerVerifier
from mig_annotator.schemas import ScoringConfig, Trace

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
        self._revision: str | None = None
        self._owns_probe = probe is None
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
    def revision(self) -> str | None:
        return self._revision

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
        except Exception as error:
            logger.exception("the probe failed to load")
            self._state, self._error = "failed", f"the probe failed to load: {error}"
            return
        self._install(probe)

    async def health(self) -> str | None:
        """None when the probe can serve, else why not. Remote backends may offer ``health_check()``."""
        if self._state != "ready":
            return self._error or "the probe is loading"
        assert self._annotator is not None
        check = getattr(self._annotator.probe, "health_check", None)
        if not callable(check):
            return None
        try:
            await asyncio.wait_for(asyncio.to_thread(check), _HEALTH_CHECK_TIMEOUT_S)
        except Exception as error:
            return f"the probe is unreachable: {error!r}"
        return None

    def close(self) -> None:
        """Release the annotator, and the probe this runtime opened (an injected one is the caller's)."""
        if self._annotator is None:
            return
        self._annotator.close()
        close = getattr(self._annotator.probe, "close", None)
        if self._owns_probe and callable(close):
            close()

    def _install(self, probe: Probe) -> None:
        self._annotator = Annotator(probe, self._defaults, verifier=self._verifier)
        self._revision = probe_revision(probe)
        self._state, self._error = "ready", None

    @staticmethod
    def _warm_up(annotator: Annotator) -> None:
        """One tiny annotation, so the first request does not pay the backend's one-time set-up."""
        warm_up = Trace(id="warm-up", question="1 + 1?", steps=["1 + 1 = 2."], reference_answer="2")
        annotator.annotate_many([warm_up])
        annotator.close()  # its thread only: the verifier belongs to the runtime's owner


def probe_revision(probe: Probe) -> str | None:
    """A short digest naming the probe's weights.

    A backend's own ``revision`` attribute wins. For a local folder: the converted default model's source
    GGUF digest, else a digest of ``config.json`` and the tensor index (names, dtypes, shapes, offsets) of
    every ``*.safetensors`` file, which changes whenever the weights' layout or files do.
    """
    given = getattr(probe, "revision", None)
    if isinstance(given, str):
        return given
    settings = getattr(probe, "settings", None)
    folder = getattr(settings, "model_path", None)
    if folder is None:
        return None
    folder = Path(folder)
    marker = folder / "mig-converted.json"
    try:
        if marker.is_file():
            return "gguf-" + str(json.loads(marker.read_text())["source_sha256"])[:16]
        digest = hashlib.sha256((folder / "config.json").read_bytes())
        for weights in sorted(folder.glob("*.safetensors")):
            digest.update(weights.name.encode())
            digest.update(_safetensors_header(weights))
        return "sha256-" + digest.hexdigest()[:16]
    except (OSError, KeyError, ValueError) as error:
        logger.warning("could not compute the probe's revision: %s", error)
        return None


def _safetensors_header(path: Path) -> bytes:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return handle.read(min(length, 100_000_000))
