"""Bounds on what a user query may cost the audit process: its address-space growth, and result sizes."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


def _address_space_bytes() -> int:
    """The process's current virtual size (``/proc/self/statm``'s first field), 0 where unknown."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@contextmanager
def address_space_growth_cap(growth_bytes: int) -> Iterator[None]:
    """Within the block, an allocation that would grow the address space by more than ``growth_bytes``
    fails (``RLIMIT_AS``: a MemoryError in Python, an out-of-memory error in DuckDB); a tighter limit the
    process already has is kept, and the previous one comes back afterwards. A no-op where unknown."""
    current = _address_space_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = current + growth_bytes
    if not current or (soft != resource.RLIM_INFINITY and soft <= cap):
        yield
        return
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def value_bytes(value: Any) -> int:
    """About how many bytes ``value`` (a row, or one of DuckDB's Python values) holds as data."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, tuple | list):
        return 8 + sum(value_bytes(item) for item in value)
    if isinstance(value, Mapping):
        return 8 + sum(value_bytes(key) + value_bytes(item) for key, item in value.items())
    return 8
