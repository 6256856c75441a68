"""Helpers for the Ray engine tests: a fake probe factory that actors can unpickle, and a driver entry
point (``python -m tests.builder.ray_support``) that a test can kill.

The Ray cluster's workers import this module, so the cluster starts with the checkout on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mig_annotator.builder.plan import BuildPlan
from mig_annotator.engine.probe.base import ProbeError, ProbeResult
from mig_annotator.engine.prompt import ProbeSequence
from tests.builder.conftest import FAKE_IDENTITY, FakeProbe, make_plan


class SlowFakeProbe(FakeProbe):
    """The builder tests' fake probe, sleeping ``delay_s`` per call so a test can act mid-build."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self._delay_s = delay_s

    def score(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        time.sleep(self._delay_s)
        return super().score(sequences)


@dataclass(frozen=True)
class FakeProbeFactory:
    """Opens a fake probe in a Ray actor; records the actor's process id in ``pid_dir`` (when given)."""

    delay_s: float = 0.0
    pid_dir: str | None = None

    def __call__(self) -> FakeProbe:
        if self.pid_dir is not None:
            Path(self.pid_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.pid_dir) / str(os.getpid())).touch()
        return SlowFakeProbe(self.delay_s) if self.delay_s else FakeProbe()


class FailingProbe(FakeProbe):
    """Fails every call after the first ``good_calls``, as a probe whose backend went away."""

    def __init__(self, good_calls: int) -> None:
        super().__init__()
        self._left = good_calls

    def score(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        if self._left <= 0:
            raise ProbeError("the probe backend is gone")
        self._left -= 1
        return super().score(sequences)


@dataclass(frozen=True)
class FailingProbeFactory:
    good_calls: int = 1

    def __call__(self) -> FakeProbe:
        return FailingProbe(self.good_calls)


@dataclass(frozen=True)
class OtherModelFactory:
    """A probe that is not the one the plan was made for."""

    def __call__(self) -> FakeProbe:
        return FakeProbe(model="another-model")


def ray_plan(source: Path, out: Path) -> BuildPlan:
    """Twelve rows in three shards (of three, three and one windows), groups of two."""
    return make_plan(
        FAKE_IDENTITY, [source], out, shard_rows=5, window_rows=2, group_rows=2, row_group_rows=2
    )


def main(argv: list[str]) -> None:
    """``SOURCE OUT ADDRESS DELAY_S``: run a Ray build with the slow fake probe (killed by a test)."""
    from mig_annotator.builder.ray_engine import RayOptions, run_ray_build

    source, out, address, delay = argv
    options = RayOptions(address=address, num_probes=2, actor_resources={"num_cpus": 0.5})
    run_ray_build(ray_plan(Path(source), Path(out)), FakeProbeFactory(float(delay)), options)


if __name__ == "__main__":
    main(sys.argv[1:])
