"""The builder's public entry point: build settings and probe settings in, a finished dataset out.

:func:`run_build` is what the CLI's `build`, a script or a notebook calls. It owns the orchestration: the
probe's identity (computed without loading the weights where it can be), the plan, claiming the output
folder before any model loads, resuming or recognising a finished build, when to open the probe, and which
engine runs. :func:`prepare_build` does every step that can refuse before any work starts, so a caller can
tell a bad request from a failure mid-build.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mig_annotator.builder.manifest import Manifest
    from mig_annotator.builder.pipeline import BuildObserver, BuildResult
    from mig_annotator.builder.plan import BuildPlan
    from mig_annotator.builder.ray_engine import RayOptions
    from mig_annotator.builder.settings import BuildSettings
    from mig_annotator.engine.probe.base import Probe
    from mig_annotator.engine.probe.registry import ProbeSettings


@dataclass
class PreparedBuild:
    """A planned, claimed build: ``finished`` when the output already holds it, else :meth:`run` it."""

    plan: BuildPlan
    probe_settings: ProbeSettings
    ray: RayOptions | None
    probe: Probe | None
    finished: Manifest | None

    def run(self, observer: BuildObserver | None = None) -> BuildResult:
        """Build (or finish building) the dataset, in this process or on Ray. Committed work is kept when
        it fails or is interrupted: running it again resumes."""
        from mig_annotator.builder.pipeline import run_build as run_plan
        from mig_annotator.engine.probe.registry import open_probe

        if self.ray is not None:  # Ray actors open their own probes
            from mig_annotator.builder.ray_engine import run_ray_build

            return run_ray_build(
                self.plan, functools.partial(open_probe, self.probe_settings), self.ray, observer
            )
        if self.probe is None:
            self.probe = open_probe(self.probe_settings)
        return run_plan(self.plan, self.probe, observer)


def prepare_build(
    settings: BuildSettings, probe_settings: ProbeSettings, *, ray: RayOptions | None = None
) -> PreparedBuild:
    """Plan the build and claim its output folder, refusing a conflicting one before loading the model.

    The probe is opened here only when its identity needs it (vllm-server: the served model comes from the
    server), or, for a local build that is not finished yet, so that a model that does not load fails
    before any work starts.
    """
    from mig_annotator.builder.pipeline import claim_output, finished_manifest
    from mig_annotator.builder.plan import plan_build
    from mig_annotator.engine.probe.registry import expected_identity, open_probe

    probe = None
    identity = expected_identity(probe_settings)  # the weights' digest, without loading them
    if identity is None:
        probe = open_probe(probe_settings)
        identity = probe.identity()
    plan = plan_build(settings, identity)
    claim_output(plan)
    finished = None if settings.overwrite else finished_manifest(plan)
    if finished is None and probe is None and ray is None:
        probe = open_probe(probe_settings)
    return PreparedBuild(plan, probe_settings, ray, probe, finished)


def run_build(
    settings: BuildSettings,
    probe_settings: ProbeSettings,
    *,
    ray: RayOptions | None = None,
    observer: BuildObserver | None = None,
) -> Manifest:
    """Build the dataset ``settings`` describe with the probe ``probe_settings`` name; its manifest.

    A finished build in ``settings.out`` is returned as it is; a partial one is resumed; ``ray`` runs the
    build on Ray (one probe per actor) instead of in this process.
    """
    prepared = prepare_build(settings, probe_settings, ray=ray)
    if prepared.finished is not None:
        return prepared.finished
    return prepared.run(observer).manifest
