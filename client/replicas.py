"""The reward services a client sends to: one or several replicas of the same service.

A client takes its URLs as a list or one comma-separated string (as OpenRLHF's ``--remote_rm_url`` does).
Each request goes to the least-loaded replica (fewest traces in flight from this client; ties: the one
picked longest ago). A replica that did not answer (unreachable, or unavailable after its retries) is
set aside for :data:`DOWN_S` seconds and the request goes to another; when every replica is set aside,
the one set aside first is tried again.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

DOWN_S = 10.0


def service_urls(given: str | Sequence[str] | None, env_name: str, default: str) -> list[str]:
    """The URLs: ``given`` (a list, or a comma-separated string), else ``$env_name``, else ``default``."""
    if given is None:
        given = os.environ.get(env_name) or default
    parts = given.split(",") if isinstance(given, str) else list(given)
    urls = [part.strip().rstrip("/") for part in parts if part.strip()]
    if not urls:
        raise ValueError(f"no service URL in {given!r}: give one URL, a list, or a comma-separated string")
    return urls


@dataclass(slots=True)
class Replica:
    url: str
    in_flight: int = 0
    down_until: float = 0.0
    last_pick: int = 0

    def up(self, now: float) -> bool:
        return self.down_until <= now


class Replicas:
    """Which replica gets the next request; what each has in flight. Used from one event loop or thread at
    a time per call (the counts are only a load hint)."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.all = [Replica(url) for url in urls]
        self._picks = itertools.count(1)

    def __len__(self) -> int:
        return len(self.all)

    def pick(self, avoid: Replica | None = None) -> Replica:
        """The least-loaded replica that is up (not ``avoid`` when another is up)."""
        now = time.monotonic()
        up = [replica for replica in self.all if replica.up(now)]
        if avoid is not None and len(up) > 1:
            up = [replica for replica in up if replica is not avoid]
        if not up:
            chosen = min(self.all, key=lambda replica: replica.down_until)
        else:
            chosen = min(up, key=lambda replica: (replica.in_flight, replica.last_pick))
        chosen.last_pick = next(self._picks)
        return chosen

    def others_up(self, replica: Replica) -> bool:
        now = time.monotonic()
        return any(other is not replica and other.up(now) for other in self.all)

    @staticmethod
    def set_aside(replica: Replica) -> None:
        replica.down_until = time.monotonic() + DOWN_S
