"""Batch annotation: rollout files in, trainer-ready Parquet out, DuckDB audits over the result.

``plan`` checks and fingerprints the inputs, ``pipeline`` runs a resumable build (``annotate`` scores one
window, ``checkpoints`` and ``storage`` make every write atomic), ``export`` writes SFT and PRM files, and
``audit`` questions built datasets. ``commands`` holds the CLI commands.
"""
