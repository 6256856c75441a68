"""`serve`: the reward service under uvicorn.

Settings come from ``MIG_*`` environment variables (docs/service.md); the options given here override them,
field by field (``--mode naive`` keeps ``MIG_PROBE__MODEL``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mig_annotator.cli.console import fail
from mig_annotator.cli.options import (
    OptionError,
    SettingsOptions,
    describe_validation_error,
    field_option,
    probe_options,
    scoring_options,
    with_settings_options,
)
from mig_annotator.service.settings import ServiceSettings

ENV_PREFIX = "MIG_"


@with_settings_options
def serve(
    host: Annotated[str | None, field_option(ServiceSettings, "host", show_default="127.0.0.1")] = None,
    port: Annotated[int | None, field_option(ServiceSettings, "port", show_default="8000")] = None,
    *,
    settings_options: SettingsOptions,
) -> None:
    """Run the reward service (HTTP API for trainers).

    Every setting has an MIG_* environment variable (MIG_PROBE__BACKEND, MIG_SCORING__WATERMARK,
    MIG_API_KEYS, MIG_AUDIT_DIR, ...): see docs/service.md for the endpoints, settings, errors, auth, limits
    and the audit log. The probe and scoring options here override their variables; scoring options are
    the defaults a request may override.
    """
    from pydantic import ValidationError

    from mig_annotator.service.server import serve as run_server

    overrides: dict[str, Any] = {
        name: value for name, value in (("host", host), ("port", port)) if value is not None
    }
    try:
        # no default backend: the environment's, else the settings' default
        probe = probe_options(settings_options.probe, default_backend=None)
        scoring = scoring_options(settings_options.scoring)
        overrides |= {name: value for name, value in (("probe", probe), ("scoring", scoring)) if value}
        settings = ServiceSettings(**overrides)  # the environment, with these merged over it field by field
    except OptionError as error:
        fail(str(error))
    except ValidationError as error:
        fail(describe_validation_error(error, env_prefix=ENV_PREFIX))
    run_server(settings)


def register(app: typer.Typer) -> None:
    """Add `serve`."""
    app.command("serve")(serve)
