"""Time a checkpoint reload (mig.probe.reload: check + load + in-place copy) into a running probe.

PYTHONPATH=. python bench/reload_time.py [FOLDER]    # default: the prepared SmolLM2-135M folder
"""

from __future__ import annotations

import os
import sys
import time

from mig_annotator.mig.model_store import resolve_model_path
from mig_annotator.mig.probe.reload import stage_reload
from mig_annotator.mig.probe.settings import TransformersProbeSettings
from mig_annotator.mig.probe.transformers_probe import TransformersProbe


def main() -> None:
    folder = resolve_model_path(sys.argv[1] if len(sys.argv) > 1 else None)
    probe = TransformersProbe(TransformersProbeSettings(model=str(folder), threads=1))
    probe.identity()
    for run in range(3):
        started = time.perf_counter()
        staged = stage_reload(probe, folder)
        checked = time.perf_counter()
        staged.apply()
        done = time.perf_counter()
        load = os.getloadavg()[0]
        print(f"run {run}: stage {checked - started:.2f}s, swap {done - checked:.3f}s, load {load:.2f}")


if __name__ == "__main__":
    main()
