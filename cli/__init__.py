"""The ``mig-annotator`` command line: a root Typer app (:mod:`.app`) and one module per command group.

Each command module exposes ``register(app)``; commands parse options into settings, call the engine, the
service or the builder, and print. The probe and scoring options are declared once, in :mod:`.options`.
This layer sits on top: nothing below it imports it.
"""
