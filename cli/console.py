"""The consoles every command prints to, and the one way a command fails.

Both consoles soft-wrap: rich never inserts line breaks into a message, whatever the console's width, so an
error naming a path or a field reaches a log file or a script on one line (a terminal still folds long lines
for display). Tables and panels keep their layout: they are laid out to the console's width as before.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

USAGE_ERROR = 2  # bad options or input files: nothing was done


def message_console(*, stderr: bool = False) -> Console:
    """A console whose printed messages are never wrapped (``soft_wrap``); tables keep their layout."""
    return Console(stderr=stderr, soft_wrap=True)


console = message_console()
errors = message_console(stderr=True)


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code=code)


def note(message: str) -> None:
    """Print ``note: message`` on stderr (one line; the message is not read as markup)."""
    errors.print(f"note: {escape(message)}", highlight=False)
