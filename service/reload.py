"""Following the policy: a checkpoint folder loaded into the running probe between micro-batches.

The slow part (checking the folder and loading its weights, :func:`engine.probe.reload.stage_reload`) runs
while the probe serves; the swap runs with the runtime's scoring lock held, which each micro-batch holds
for its whole engine call, so every annotation is scored by one set of weights and carries that version.
Requests queued before the swap are scored after it on the new weights (the version says so). One reload
runs at a time. Reloading a folder whose content is what the probe already runs (the same digest: several
reward workers of one trainer asking for the same checkpoint) changes nothing and answers the current
version. Only the transformers backend reloads; see docs/service.md for vLLM.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from mig_annotator.schemas.api import ReloadResponse
from mig_annotator.service.failures import NotReady, ProbeTooOld, ReloadRejected
from mig_annotator.service.runtime import ProbeRuntime

if TYPE_CHECKING:
    from mig_annotator.engine.probe.reload import StagedWeights


T = TypeVar("T")


class ProbeReloader:
    def __init__(self, runtime: ProbeRuntime, timeout_s: float = 600.0) -> None:
        self._runtime = runtime
        self._timeout_s = timeout_s
        self._one_at_a_time = asyncio.Lock()

    def require(self, min_version: int | None) -> None:
        """:class:`ProbeTooOld` (409) when the serving probe is older than ``min_version``."""
        if min_version is not None and self._runtime.version < min_version:
            raise ProbeTooOld(
                f"the probe is at version {self._runtime.version}, older than min_probe_version "
                f"{min_version}; retry after the reload",
                retry_after_s=1,
            )

    async def reload(self, folder: str) -> ReloadResponse:
        from mig_annotator.engine.probe.reload import ReloadRefused, check_checkpoint_folder, stage_reload
        from mig_annotator.engine.probe.transformers_probe import TransformersProbe

        annotator = self._runtime.annotator
        if annotator is None:
            raise NotReady("the probe is not loaded", retry_after_s=5)
        probe = annotator.probe
        if not isinstance(probe, TransformersProbe):
            raise ReloadRejected.for_field(
                "model", f"the {probe.backend} probe cannot reload weights (only the transformers probe can)"
            )
        try:  # before any file in it is read or hashed (a folder such as /proc or /etc is refused here)
            await asyncio.to_thread(check_checkpoint_folder, folder)
        except ReloadRefused as error:
            raise ReloadRejected.for_field("model", str(error)) from error
        async with self._one_at_a_time:
            started = time.perf_counter()
            serving = self._runtime.identity
            digest = await self._bounded(folder, asyncio.to_thread(_content_digest, folder), started)
            if serving is not None and digest == serving.digest:
                return ReloadResponse(
                    probe_version=self._runtime.version,
                    fingerprint=serving.fingerprint,
                    digest=serving.digest,
                    seconds=time.perf_counter() - started,
                )
            try:
                staged = await self._bounded(folder, asyncio.to_thread(stage_reload, probe, folder), started)
            except ReloadRefused as error:
                raise ReloadRejected.for_field("model", str(error)) from error
            version = await asyncio.to_thread(self._swap, staged)
            identity = staged.identity
            return ReloadResponse(
                probe_version=version,
                fingerprint=identity.fingerprint,
                digest=identity.digest,
                seconds=time.perf_counter() - started,
            )

    async def _bounded(self, folder: str, work: Awaitable[T], started: float) -> T:
        """``work``'s result, or 422 once the reload has run ``timeout_s``: the lock is then released and
        the stuck thread's result, if it ever comes, is dropped (the probe keeps its weights)."""
        remaining = max(self._timeout_s - (time.perf_counter() - started), 0.0)
        try:
            return await asyncio.wait_for(work, remaining)
        except TimeoutError:
            raise ReloadRejected.for_field(
                "model",
                f"{folder}: checking and loading the checkpoint ran past {self._timeout_s:g} s "
                "(MIG_RELOAD_TIMEOUT_S); the probe keeps its weights",
            ) from None

    def _swap(self, staged: StagedWeights) -> int:
        with self._runtime.scoring_lock:
            identity = staged.apply()
            return self._runtime.reloaded(identity)


def _content_digest(folder: str) -> str | None:
    """The folder's content digest as a probe identity has it (None where there is nothing to hash: the
    reload's own checks then say what is wrong)."""
    from pathlib import Path

    from mig_annotator.engine.probe.identity import folder_digest

    path = Path(folder).expanduser()
    if not path.is_dir():
        return None
    try:
        return folder_digest(path)
    except OSError:
        return None
