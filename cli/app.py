"""The root `mig-annotator` app: one Typer app, each command group added by its module's ``register``."""

from __future__ import annotations

import typer

from mig_annotator.cli import audit, build, evaluate, export, model, report, score, serve

app = typer.Typer(
    help="Step-wise Marginal Information Gain (MIG) rewards for reasoning traces.", no_args_is_help=True
)
for command_group in (score, serve, build, export, audit, report, evaluate, model):
    command_group.register(app)


def main() -> None:
    """The console script's entry point."""
    app()
