"""Run a planned build: claim the output folder, score what is not committed yet, finish the files.

Resume: a shard with a completion marker is skipped whole; inside a shard, a window whose groups are all
committed is skipped, and inside a window only uncommitted groups are scored. Killing the process at
any moment and running the same build again gives the same files as an uninterrupted build.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from mig_annotator.builder import checkpoints as ck
from mig_annotator.builder.annotate import WindowAnnotator
from mig_annotator.builder.errors import BuildError, InputError, OutputConflictError, RejectedRowError
from mig_annotator.builder.layout import OutputLayout
from mig_annotator.builder.manifest import (
    Counts,
    Manifest,
    Timings,
    identity_differences,
    read_manifest,
    versions,
    write_manifest,
)
from mig_annotator.builder.plan import BuildPlan, ShardPlan, WindowPlan
from mig_annotator.builder.sources import SourceBatch, SourceReader
from mig_annotator.builder.stats import reward_stats
from mig_annotator.builder.storage import (
    FolderLock,
    remove_stale_tmp,
    remove_tree,
    write_bytes_atomic,
    write_parquet_atomic,
)
from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.probe.base import Probe
from mig_annotator.schemas.arrow import REJECT_SCHEMA

SESSIONS_FILE = "sessions.json"


class BuildObserver(Protocol):
    """Hears about progress (the CLI draws a progress bar from it)."""

    def on_start(self, plan: BuildPlan, done_rows: int) -> None: ...

    def on_rows(self, rows: int, annotated: int, rejected: int, tokens: int) -> None: ...

    def on_finish(self, result: BuildResult) -> None: ...


class NullObserver:
    def on_start(self, plan: BuildPlan, done_rows: int) -> None:
        pass

    def on_rows(self, rows: int, annotated: int, rejected: int, tokens: int) -> None:
        pass

    def on_finish(self, result: BuildResult) -> None:
        pass


@dataclass(frozen=True)
class BuildResult:
    manifest: Manifest
    already_complete: bool
    resumed_rows: int


#: Scores every shard not committed yet and finishes each (``finish_shard``); the engines differ only here.
ShardBuilder = Callable[[BuildObserver], None]


def run_build(plan: BuildPlan, probe: Probe, observer: BuildObserver | None = None) -> BuildResult:
    """Build (or finish building) the dataset the plan describes, with ``probe``, in this process."""
    check_probe(plan, probe)

    def build_shards(observer: BuildObserver) -> None:
        builder = _Builder(plan, probe, observer)
        try:
            builder.build_shards()
        finally:
            builder.close()

    return run_engine(plan, build_shards, observer)


def run_engine(
    plan: BuildPlan, build_shards: ShardBuilder, observer: BuildObserver | None = None
) -> BuildResult:
    """The frame every engine shares: claim and lock the output folder, let ``build_shards`` commit the
    shards, then write ``_rejects.parquet``, ``_manifest.json`` and ``_SUCCESS``."""
    observer = observer or NullObserver()
    layout = plan.layout
    claim_output(plan)
    lock = FolderLock(layout.lock, layout.root)
    lock.acquire()
    try:
        existing = read_manifest(layout.manifest)
        if existing is not None and existing.status == "complete" and layout.success.is_file():
            result = BuildResult(existing, already_complete=True, resumed_rows=plan.total_rows)
        else:
            result = _build(plan, build_shards, observer, existing)
    finally:
        lock.release()
    shutil.rmtree(layout.work, ignore_errors=True)
    observer.on_finish(result)
    return result


def check_probe(plan: BuildPlan, probe: Probe) -> None:
    """Refuse a probe whose identity is not the one the plan (and so the manifest) records."""
    planned, actual = plan.identity.probe, probe.identity()
    if actual != planned:
        raise BuildError(
            f"the probe is {actual.fingerprint} (digest {actual.digest}) but the build was planned with "
            f"{planned.fingerprint} (digest {planned.digest}): different weights, tokenizer, dtype or backend"
        )


def _build(
    plan: BuildPlan, build_shards: ShardBuilder, observer: BuildObserver, existing: Manifest | None
) -> BuildResult:
    """Score what is not committed yet and finish the output (the caller holds the folder's lock)."""
    layout = plan.layout
    session_started = time.perf_counter()
    if existing is None:  # the claim on the folder comes first
        write_manifest(
            layout.manifest, Manifest(status="building", identity=plan.identity, versions=versions())
        )
    sessions = _record_session(layout)
    remove_stale_tmp([layout.root, layout.work])
    done = sum(ck.committed_rows(layout, shard) for shard in plan.shards)
    observer.on_start(plan, done)
    build_shards(observer)
    manifest = _finish(plan, sessions, time.perf_counter() - session_started)
    return BuildResult(manifest, already_complete=False, resumed_rows=done)


def finished_manifest(plan: BuildPlan) -> Manifest | None:
    """The manifest of this very build when it has already finished in the output folder."""
    layout = plan.layout
    try:
        existing = read_manifest(layout.manifest)
    except ValueError:
        return None
    if existing is None or existing.status != "complete" or not layout.success.is_file():
        return None
    return None if identity_differences(existing.identity, plan.identity) else existing


def claim_output(plan: BuildPlan) -> None:
    """Check that the output folder is new, empty, or holds this very build; clear it for --overwrite.

    Raises :class:`OutputConflictError` naming what differs when it holds another build.
    """
    layout = plan.layout
    if layout.root.exists() and not layout.root.is_dir():
        raise OutputConflictError(f"--out {layout.root}: exists and is not a folder")
    inputs = {item.path for item in plan.files}
    if any(layout.root.resolve() in path.parents for path in inputs):
        raise OutputConflictError(f"--out {layout.root}: an input file lies inside the output folder")
    foreign = layout.foreign()
    if foreign:
        names = ", ".join(path.name for path in foreign[:5])
        raise OutputConflictError(
            f"--out {layout.root}: the folder holds files no build wrote ({names}); "
            "use an empty or new folder"
        )
    try:
        existing = read_manifest(layout.manifest)
    except ValueError as error:
        if not plan.settings.overwrite:
            raise OutputConflictError(
                f"{layout.manifest}: unreadable ({error}); use --overwrite to discard the folder's build"
            ) from error
        existing = None
    work_files = [p for p in layout.work.iterdir() if p != layout.lock] if layout.work.is_dir() else []
    has_output = existing is not None or bool(layout.parts()) or bool(work_files)
    if not has_output:
        layout.root.mkdir(parents=True, exist_ok=True)
        return
    if plan.settings.overwrite:
        _clear(layout)
        return
    if existing is None:
        raise OutputConflictError(
            f"--out {layout.root}: holds build files but no _manifest.json; use --overwrite to discard them"
        )
    if existing.identity.probe != plan.identity.probe:
        old, new = existing.identity.probe, plan.identity.probe
        raise OutputConflictError(
            f"--out {layout.root}: was built with the probe {old.fingerprint} (digest {old.digest}), "
            f"this build's probe is {new.fingerprint} (digest {new.digest}); a build is not continued with "
            "another probe. Use --overwrite to discard it, or choose another --out"
        )
    changed = identity_differences(existing.identity, plan.identity)
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise OutputConflictError(
            f"--out {layout.root}: holds a build with different inputs or settings (changed: {shown}); "
            "it will not be mixed with this one. Use --overwrite to discard it, or choose another --out"
        )


def _clear(layout: OutputLayout) -> None:
    with FolderLock(layout.lock, layout.root):
        for path in layout.owned():
            remove_tree(path)
        if layout.work.is_dir():
            for path in layout.work.iterdir():
                if path != layout.lock:
                    remove_tree(path)


def _record_session(layout: OutputLayout) -> list[str]:
    path = layout.work / SESSIONS_FILE
    sessions: list[str] = json.loads(path.read_text()) if path.is_file() else []
    sessions.append(datetime.now(UTC).isoformat(timespec="seconds"))
    layout.work.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps(sessions).encode())
    return sessions


class _Builder:
    """Walks the shards in order, scoring what is not committed yet."""

    def __init__(self, plan: BuildPlan, probe: Probe, observer: BuildObserver) -> None:
        settings = plan.settings
        self._plan = plan
        self._layout = plan.layout
        self._observer = observer
        self._annotator = Annotator(probe, settings.scoring)  # starts answer-check workers on first use
        self._windows = WindowAnnotator.for_plan(plan, self._annotator)
        self._rows_schema = ck.work_rows_schema(plan.output_schema)
        self._reader = SourceReader(
            plan.files,
            plan.schemas,
            plan.kept_schema,
            [column.source for column in plan.kept],
            limit=settings.limit,
            read_rows=min(settings.window_rows, 4096),
        )

    def close(self) -> None:
        """Stop the answer-check workers (the probe belongs to the caller)."""
        self._annotator.close()

    def build_shards(self) -> None:
        for shard in self._plan.shards:
            if is_shard_committed(self._plan, shard):
                self._skip(shard.rows)
                continue
            for window in shard.windows:
                self._build_window(shard, window)
            finish_shard(self._plan, shard)

    def _skip(self, rows: int) -> None:
        while rows > 0:
            taken = len(self._reader.take(min(rows, 4096)))
            if taken == 0:
                raise InputError("the inputs ended early: they changed while the build was running")
            rows -= taken

    def _take(self, window: WindowPlan) -> SourceBatch:
        batch = self._reader.take(window.rows)
        if len(batch) != window.rows or batch.start != window.start:
            raise InputError("the inputs ended early: they changed while the build was running")
        return batch

    def _build_window(self, shard: ShardPlan, window: WindowPlan) -> None:
        layout = self._layout
        if layout.window_done(shard.index, window.index).is_file():
            self._skip(window.rows)
            return
        batch = self._take(window)
        prepared = self._windows.prepare(batch)
        self._check_rejects(prepared.rejects)
        rejects_path = layout.window_rejects(shard.index, window.index)
        if prepared.rejects and not rejects_path.is_file():
            ck.write_rejects(rejects_path, prepared.rejects)
            self._observer.on_rows(len(prepared.rejects), 0, len(prepared.rejects), 0)
        for index, group in enumerate(prepared.groups):
            if ck.is_group_committed(layout, shard.index, window.index, index):
                continue
            result = self._windows.score(batch, group)
            self._check_rejects(result.rejects)
            ck.write_group(
                layout,
                shard.index,
                window.index,
                index,
                result.rows,
                result.rejects,
                result.stats,
                self._rows_schema,
            )
            self._observer.on_rows(
                len(group), result.rows.num_rows, len(result.rejects), int(result.stats["tokens_forwarded"])
            )
        ck.write_marker(
            layout.window_done(shard.index, window.index),
            window_summary(prepared.seconds, len(prepared.rejects)),
        )

    def _check_rejects(self, rejects: list[dict[str, object]]) -> None:
        check_rejects(self._plan, rejects)


def check_rejects(plan: BuildPlan, rejects: list[dict[str, object]]) -> None:
    """Raise :class:`RejectedRowError` for the first reject when the build runs with --fail-on-reject."""
    if rejects and plan.settings.fail_on_reject:
        first = rejects[0]
        raise RejectedRowError(
            f"{first['source_file']} row {first['source_row']} (trace {first['trace_id']!r}): "
            f"{first['stage']}: {first['reason']} (--fail-on-reject)"
        )


def finish_shard(plan: BuildPlan, shard: ShardPlan) -> None:
    """Write the shard's part file and rejects from its checkpoints, then its completion marker
    (every window of the shard must be committed)."""
    layout, schema = plan.layout, plan.output_schema
    tables = (ck.sorted_window_rows(layout, shard.index, w.index, schema) for w in shard.windows)
    annotated = write_parquet_atomic(tables, schema, layout.part(shard.index), plan.settings.row_group_rows)
    rejects = ck.read_rejects(ck.shard_reject_files(layout, shard))
    ck.write_rejects(layout.shard_rejects(shard.index), rejects.to_pylist())
    marker = _shard_summary(layout, shard, annotated, rejects.column("stage").to_pylist())
    ck.write_marker(layout.shard_done(shard.index), marker)
    remove_tree(layout.shard_dir(shard.index))


def is_shard_committed(plan: BuildPlan, shard: ShardPlan) -> bool:
    """Whether the shard's part file is final; a marker whose part file was removed is dropped."""
    layout = plan.layout
    if ck.read_marker(layout.shard_done(shard.index)) is None:
        return False
    if layout.part(shard.index).is_file():
        return True
    layout.shard_done(shard.index).unlink()  # the part file was removed: build the shard again
    return False


def window_summary(prepared_seconds: float, rejected_before_scoring: int) -> dict[str, object]:
    """A window's completion marker."""
    return {"prepare_seconds": prepared_seconds, "rejected_before_scoring": rejected_before_scoring}


def _shard_summary(
    layout: OutputLayout, shard: ShardPlan, annotated: int, stages: list[str]
) -> dict[str, object]:
    totals: Counter[str] = Counter()
    for window in shard.windows:
        marker = ck.read_marker(layout.window_done(shard.index, window.index)) or {}
        totals["annotate_seconds"] += float(marker.get("prepare_seconds", 0.0))
        for path in ck.group_files(layout, shard.index, window.index):
            stats = ck.group_stats(path)
            totals["annotate_seconds"] += stats.get("seconds", 0.0)
            totals["probe_seconds"] += stats.get("probe_seconds", 0.0)
            totals["tokens_forwarded"] += stats.get("tokens_forwarded", 0.0)
            totals["steps"] += stats.get("steps", 0.0)
    if annotated + len(stages) != shard.rows:
        raise BuildError(
            f"shard {shard.index}: {annotated} annotated + {len(stages)} rejected rows "
            f"!= {shard.rows} input rows"
        )
    return {
        "rows": shard.rows,
        "annotated": annotated,
        "rejected": len(stages),
        "rejects_by_stage": dict(Counter(stages)),
        **{key: float(value) for key, value in totals.items()},
        "probe_tokens": float(totals["tokens_forwarded"]),  # forwarded by this run's probe
    }


def _finish(plan: BuildPlan, sessions: list[str], session_seconds: float) -> Manifest:
    """Merge the rejects, write the final manifest, then _SUCCESS."""
    layout = plan.layout
    shard_rejects = [layout.shard_rejects(shard.index) for shard in plan.shards]
    rejects = ck.read_rejects([path for path in shard_rejects if path.is_file()])
    write_parquet_atomic(
        [rejects.drop_columns([ck.GLOBAL_ROW]).cast(REJECT_SCHEMA)],
        REJECT_SCHEMA,
        layout.rejects,
        plan.settings.row_group_rows,
    )
    markers = [ck.read_marker(layout.shard_done(shard.index)) or {} for shard in plan.shards]
    by_stage: Counter[str] = Counter()
    for marker in markers:
        by_stage.update(marker.get("rejects_by_stage", {}))
    annotated = sum(int(marker.get("annotated", 0)) for marker in markers)
    rejected = sum(int(marker.get("rejected", 0)) for marker in markers)
    annotate_seconds = sum(float(marker.get("annotate_seconds", 0.0)) for marker in markers)
    tokens = int(sum(float(marker.get("tokens_forwarded", 0.0)) for marker in markers))
    parts = [layout.part(shard.index) for shard in plan.shards]
    counts = Counts(
        input_rows=plan.total_rows,
        annotated=annotated,
        rejected=rejected,
        rejects_by_stage=dict(sorted(by_stage.items())),
        shards=len(plan.shards),
        steps=int(sum(float(marker.get("steps", 0.0)) for marker in markers)),
        tokens_forwarded=tokens,
        duplicate_ids=plan.duplicates.count,
    )
    probe_seconds = sum(float(marker.get("probe_seconds", 0.0)) for marker in markers)
    # the tokens this run's probe forwarded: a rescore's are 0, its tokens_forwarded are the source's
    probe_tokens = sum(
        float(marker.get("probe_tokens", marker.get("tokens_forwarded", 0.0))) for marker in markers
    )
    timings = Timings(
        started_at=sessions[0],
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sessions=len(sessions),
        annotate_seconds=round(annotate_seconds, 3),
        probe_seconds=round(probe_seconds, 3),
        traces_per_second=round(plan.total_rows / annotate_seconds, 3) if annotate_seconds else 0.0,
        tokens_per_second=round(probe_tokens / annotate_seconds, 1) if annotate_seconds else 0.0,
        last_session_seconds=round(session_seconds, 3),
    )
    manifest = Manifest(
        status="complete",
        identity=plan.identity,
        versions=versions(),
        counts=counts,
        timings=timings,
        reward_stats=reward_stats(parts),
        files=[path.name for path in parts] + [layout.rejects.name],
    )
    write_manifest(layout.manifest, manifest)
    write_bytes_atomic(layout.success, b"")
    return manifest
