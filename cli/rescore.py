"""`rescore`: a built dataset under new watermark, aggregation or SFT settings, without the probe (resumable).

Thin: the scoring options the user gives change the source dataset's scoring config; the builder checks,
writes and reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mig_annotator.cli.build import run_prepared
from mig_annotator.cli.console import fail
from mig_annotator.cli.options import OptionError, scoring_changes, with_scoring_options

SourceArgument = Annotated[Path, typer.Argument(help="The finished dataset folder to rescore (read only).")]
OutArgument = Annotated[Path, typer.Argument(help="The new dataset folder.")]
OverwriteOption = Annotated[bool, typer.Option(help="Discard a different build found in NEW.")]
RowGroupRowsOption = Annotated[int, typer.Option(help="Rows per Parquet row group.")]
ProgressOption = Annotated[bool, typer.Option(help="Draw a progress bar.")]


@with_scoring_options
def rescore(
    source: SourceArgument,
    out: OutArgument,
    overwrite: OverwriteOption = False,
    row_group_rows: RowGroupRowsOption = 2048,
    progress: ProgressOption = True,
    *,
    scoring_options: Any,
) -> None:
    """Rescore a built dataset under new --watermark, --aggregation or --sft-* settings without the probe:
    the same dataset a full `build` with them writes (its config_hash too). Options not given keep the
    source's settings; settings the probe reads (segmenter, prompt, context limit) need a rebuild."""
    from pydantic import ValidationError

    from mig_annotator.builder.errors import BuildError
    from mig_annotator.builder.rescore import RescoreSettings, prepare_rescore, source_manifest

    try:
        scoring = scoring_changes(source_manifest(source).identity.scoring, scoring_options)
        settings = RescoreSettings(
            source=source, out=out, scoring=scoring, row_group_rows=row_group_rows, overwrite=overwrite
        )
        prepared = prepare_rescore(settings)
    except (OptionError, ValidationError, BuildError, ValueError) as error:
        fail(str(error))
    run_prepared(prepared, out, progress, show_config_hash=True)


def register(app: typer.Typer) -> None:
    """Add `rescore`."""
    app.command("rescore")(rescore)
