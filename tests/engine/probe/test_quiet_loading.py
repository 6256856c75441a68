"""Loading the real probe prints no "Loading weights" bar unless transformers is asked to."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LOAD = (
    "from mig_annotator.engine.probe.settings import TransformersProbeSettings\n"
    "from mig_annotator.engine.probe.transformers_probe import TransformersProbe\n"
    "TransformersProbe(TransformersProbeSettings(device='cpu', threads=1))\n"
)


def load_probe(**env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", LOAD],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": ""} | env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.model
def test_loading_the_probe_is_quiet_by_default_and_talks_when_asked() -> None:
    assert "Loading weights" not in load_probe()
    assert "Loading weights" in load_probe(TRANSFORMERS_VERBOSITY="info")
