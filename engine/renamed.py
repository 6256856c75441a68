"""Settings that were renamed: the old name keeps working for now, with a DeprecationWarning and one log
line naming the new name; where both are given, the new one wins."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)


def move_renamed(data: Any, renamed: Mapping[str, tuple[str, str]]) -> Any:
    """``data`` (a settings mapping; anything else is returned as it is) with each old key of ``renamed``
    moved to its new key. ``renamed``: old field -> (new field, what the warning says to use instead)."""
    if not isinstance(data, Mapping) or not any(old in data for old in renamed):
        return data
    moved = dict(data)
    for old, (new, advice) in renamed.items():
        if old not in moved:
            continue
        value = moved.pop(old)
        moved.setdefault(new, value)
        message = f"{advice} (the old name still works, and is ignored where the new one is given)"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        logger.warning("%s", message)
    return moved
