"""mig-annotator: Step-wise Marginal Information Gain rewards for RL on LLM reasoning.

The repository keeps one top-level folder per layer (``schemas``, ``engine``, ``service``, ``builder``,
``client``, ``trainer``, ``cli``); pyproject.toml's ``package-dir`` installs each under this one
namespace, so a user's environment gets a single top-level package, ``mig_annotator``. Layering (checked
by import-linter): schemas <- engine <- {service, builder} <- cli; ``client`` depends only on ``schemas``;
``trainer`` sits above ``client`` and ``engine`` (nothing below imports it). docs/architecture.md says why
there are no links.
"""

from pathlib import Path as _Path

# Run from a source checkout (a clone or a git worktree, with or without an editable install), the layers are
# the folders beside this one: search there first, so that the checkout's own code is what runs. An installed
# wheel has the layers inside this folder and no pyproject.toml beside it, and is left as it is.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "engine" / "annotator.py").is_file():
    __path__.append(str(_checkout))
del _Path, _checkout
