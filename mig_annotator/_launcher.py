"""The ``mig-annotator`` console script: a clear message when the engine's extras are not installed.

The base install (``pip install mig-annotator``) holds only the client and the schemas; the command line
needs the engine (``pip install 'mig-annotator[engine]'``, or ``[serve]``/``[build]``/``[all]`` for those
commands). The check runs before anything heavy is imported.
"""

from __future__ import annotations

import importlib.util
import sys

ENGINE_MODULES = ("torch", "transformers", "gguf", "safetensors", "math_verify", "typer", "rich")


def missing_engine_modules() -> list[str]:
    return [name for name in ENGINE_MODULES if importlib.util.find_spec(name) is None]


def main() -> None:
    missing = missing_engine_modules()
    if missing:
        sys.stderr.write(
            "mig-annotator: the command line needs the engine extras, and these packages are missing: "
            f"{', '.join(missing)}.\n"
            "Install them with: pip install 'mig-annotator[engine]' (or [serve], [build], [all]).\n"
            "The base install provides the Python client only: from mig_annotator.client import MigClient\n"
        )
        raise SystemExit(2)
    from mig_annotator.cli.app import main as run_cli

    run_cli()
