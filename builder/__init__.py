"""Batch annotation: rollout files in, trainer-ready Parquet out, DuckDB audits over the result.

:func:`run_build` (``entry``) is the public entry point: build settings and probe settings in, a finished
dataset out; ``prepare_build`` does its checks before any work starts. Below it, ``plan`` checks and
fingerprints the inputs, ``pipeline`` runs a resumable build with an open probe (``annotate`` scores one
window, ``checkpoints`` and ``storage`` make every write atomic), ``ray_engine`` runs it on Ray, ``export``
writes SFT and PRM files, ``rescore`` re-derives a built dataset's rewards under new watermark, aggregation
or SFT settings without the probe (``builder.rescore.rescore_dataset``; import it from its module, which
loads pyarrow), and ``audit`` questions built datasets. The CLI commands live in :mod:`mig_annotator.cli`.
"""

from mig_annotator.builder.entry import PreparedBuild, prepare_build, run_build

__all__ = ["PreparedBuild", "prepare_build", "run_build"]
