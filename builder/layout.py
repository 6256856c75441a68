"""Where everything lives in a build's output folder.

::

    OUT/part-00000.parquet ...      the annotated rows, one file per shard, in input order
    OUT/_rejects.parquet            rows that could not be annotated, with reasons
    OUT/_manifest.json              inputs, configuration, probe, versions, counts, timings
    OUT/_SUCCESS                    written last
    OUT/_work/                      checkpoints while building (removed at the end)
        .lock                       held by the running build
        shard-00000.done            completion marker of a shard (its part file is final)
        shard-00000.rejects.parquet the shard's rejects, merged into _rejects.parquet at the end
        shard-00000/window-0000/    checkpoints of one scoring window
            rejects.parquet         rows rejected before scoring
            group-0000.parquet      one committed group of annotated rows
            group-0000.rejects.parquet  rows of that group rejected while scoring
            done                    every group of the window is committed
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PART_GLOB = "part-*.parquet"


@dataclass(frozen=True, slots=True)
class OutputLayout:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "_manifest.json"

    @property
    def success(self) -> Path:
        return self.root / "_SUCCESS"

    @property
    def rejects(self) -> Path:
        return self.root / "_rejects.parquet"

    @property
    def work(self) -> Path:
        return self.root / "_work"

    @property
    def lock(self) -> Path:
        return self.work / ".lock"

    def part(self, shard: int) -> Path:
        return self.root / f"part-{shard:05d}.parquet"

    def parts(self) -> list[Path]:
        return sorted(self.root.glob(PART_GLOB))

    def shard_done(self, shard: int) -> Path:
        return self.work / f"shard-{shard:05d}.done"

    def shard_rejects(self, shard: int) -> Path:
        return self.work / f"shard-{shard:05d}.rejects.parquet"

    def shard_dir(self, shard: int) -> Path:
        return self.work / f"shard-{shard:05d}"

    def window_dir(self, shard: int, window: int) -> Path:
        return self.shard_dir(shard) / f"window-{window:04d}"

    def window_rejects(self, shard: int, window: int) -> Path:
        return self.window_dir(shard, window) / "rejects.parquet"

    def window_done(self, shard: int, window: int) -> Path:
        return self.window_dir(shard, window) / "done"

    def group_rows(self, shard: int, window: int, group: int) -> Path:
        return self.window_dir(shard, window) / f"group-{group:04d}.parquet"

    def group_rejects(self, shard: int, window: int, group: int) -> Path:
        return self.window_dir(shard, window) / f"group-{group:04d}.rejects.parquet"

    def owned(self) -> list[Path]:
        """Every top-level path a build writes (what --overwrite removes)."""
        return [*self.parts(), self.rejects, self.manifest, self.success]

    def foreign(self) -> list[Path]:
        """Top-level entries of the folder that no build wrote."""
        if not self.root.is_dir():
            return []
        ours = {path.name for path in self.owned()} | {self.work.name}
        return sorted(
            path for path in self.root.iterdir() if path.name not in ours and not path.name.startswith(".")
        )
