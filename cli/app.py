"""The root `mig-annotator` app: one Typer app, each command group added by its module's ``register``."""

from __future__ import annotations

import sys

import typer

try:  # Typer >= 0.26 carries its own copy of click; its usage errors are that copy's exceptions
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older Typer on the real click
    from click import exceptions as click_exceptions

from mig_annotator.cli import audit, build, evaluate, export, model, reference, report, rescore, score, serve

app = typer.Typer(
    help="Step-wise Marginal Information Gain (MIG) rewards for reasoning traces.", no_args_is_help=True
)
for command_group in (score, serve, build, rescore, export, audit, report, evaluate, model, reference):
    command_group.register(app)


def main() -> None:
    """The console script's entry point.

    On a terminal, usage errors come in Typer's framed panels. Otherwise (a pipe, a log file, a script)
    click prints them plainly, so that a message naming a path or an option is never cut into the panel's
    80-column lines.
    """
    if sys.stderr.isatty():
        app()
        return
    try:
        outcome = app(standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError:  # the help is printed already, as on a terminal
        raise SystemExit(2) from None
    except click_exceptions.ClickException as error:
        error.show()
        raise SystemExit(error.exit_code) from None
    except typer.Abort:
        sys.stderr.write("Aborted!\n")
        raise SystemExit(1) from None
    raise SystemExit(outcome if isinstance(outcome, int) else 0)
