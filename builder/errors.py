"""Errors the builder raises: each message names the file, column, row or setting at fault."""

from __future__ import annotations


class BuildError(RuntimeError):
    """A build cannot start or go on; the message says why and what to do."""


class InputError(BuildError):
    """An input file or column cannot be used (missing file, missing column, unreadable data)."""


class OutputConflictError(BuildError):
    """The output folder holds something this build must not mix with."""


class RejectedRowError(BuildError):
    """``--fail-on-reject``: a row could not be annotated."""


class DatasetError(BuildError):
    """A built dataset cannot be read (for exports and audits)."""
