#!/usr/bin/env bash
# The layering contract (pyproject.toml's [tool.importlinter]) on the package as a regular install lays it out.
# import-linter builds its graph by walking the folder of the root package; in the repository the layers are
# folders beside mig_annotator/ (pyproject.toml's package-dir), so it reads a --target install instead.
#
#   scripts/lint_imports.sh [VENV_BIN]     # default .venv/bin
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$(cd "${1:-$ROOT/.venv/bin}" && pwd)"
TARGET="$(mktemp -d)"
BUILD="$(mktemp -d)"
trap 'rm -rf "$TARGET" "$BUILD"' EXIT
# A copy of the sources (the folders package-dir names), so that the build's build/ and egg-info folders stay
# out of the checkout.
mapfile -t FOLDERS < <("$BIN/python" -c 'import sys, tomllib
print("\n".join(sorted(set(tomllib.load(open(sys.argv[1], "rb"))["tool"]["setuptools"]["package-dir"].values()))))' \
    "$ROOT/pyproject.toml")
tar -C "$ROOT" --exclude='*/__pycache__' -cf - pyproject.toml README.md LICENSE "${FOLDERS[@]}" | tar -C "$BUILD" -xf -
"$BIN/python" -m pip install --quiet --no-deps --no-build-isolation --no-compile --target "$TARGET" "$BUILD" \
    2> >(grep -v "^WARNING: Location" >&2)
cd "$TARGET"
"$BIN/lint-imports" --config "$ROOT/pyproject.toml"
