"""`mig-annotator eval`: how well the rewards match correctness labels (trace and ProcessBench step level)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mig_annotator.cli.console import console, fail


def evaluate(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Built dataset folders and/or the service's audit-log folders or files."),
    ],
    label_col: Annotated[
        str | None,
        typer.Option(
            help="Boolean correctness column (default: is_correct, else final_answer_correct, correct, "
            "else label = -1)."
        ),
    ] = None,
    step_label_col: Annotated[
        str | None,
        typer.Option(
            help="ProcessBench step label: earliest wrong step, 0-based, -1 = all right (default: label)."
        ),
    ] = None,
    drop_bad_labels: Annotated[
        bool,
        typer.Option(help="Leave out rows whose label is not a boolean or 0/1 (counted) instead of failing."),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the 2-fold cross-validation split.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Trace AUROC of v_K, v_K - v_0, sum r_k, max r_k; ProcessBench step AUROC and F1 of the step gains."""
    from mig_annotator.builder.errors import BuildError
    from mig_annotator.builder.evaluation.evaluate import EvalOptions
    from mig_annotator.builder.evaluation.evaluate import evaluate as run_evaluation
    from mig_annotator.builder.evaluation.render import print_eval

    try:
        result = run_evaluation(
            inputs,
            EvalOptions(
                label_col=label_col,
                step_label_col=step_label_col,
                seed=seed,
                drop_bad_labels=drop_bad_labels,
            ),
        )
    except BuildError as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        print_eval(result, console)


def register(app: typer.Typer) -> None:
    """Add `eval` to the `mig-annotator` app."""
    app.command("eval")(evaluate)
