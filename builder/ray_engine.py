"""`mig-annotator build --engine ray`: score the windows of a planned build on a Ray cluster.

The work is the local engine's, cut the same way (:mod:`builder.plan`) and run by the same code:

* **Read.** A Ray Data datasource (:func:`window_source`) has one read task per shard that still has
  uncommitted windows; it reads the shard's rows with the builder's own :class:`SourceReader` (same formats,
  column mapping and presets) and yields one block per uncommitted window.
* **Annotate.** ``map_batches`` over an actor pool (:class:`WindowScorer`): each actor opens one probe and
  scores a window with :class:`WindowAnnotator` (``Annotator.plan`` + ``annotate_many``), exactly as the
  local engine does.
* **Commit.** The driver receives each scored window and commits it with the local engine's checkpoint
  writers (:mod:`builder.checkpoints`): its rejects, its groups, then its ``done`` marker; a shard whose
  windows are all committed gets its part file (:func:`finish_shard`). The end of the build (
  ``_rejects.parquet``, ``_manifest.json``, ``_SUCCESS``) is :func:`run_engine`'s, shared with local builds.

Only the driver writes the output folder, so it may be any path the driver can write. A window is committed
when its ``done`` marker exists; a rerun skips committed windows (and shards). Actors are restarted when
they die (``max_restarts``) and their window retried (``max_task_retries``); a window scored twice is
committed once, because groups already committed are not written again and scoring is deterministic.
The output of a Ray build equals that of a local build of the same plan, and either engine resumes the
other's build.

Ray is imported here only, lazily, so the builder works without the ``ray`` extra.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import json
import pickle
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mig_annotator.builder import checkpoints as ck
from mig_annotator.builder.annotate import GroupResult, WindowAnnotator
from mig_annotator.builder.errors import BuildError, InputError
from mig_annotator.builder.pipeline import (
    BuildObserver,
    BuildResult,
    check_probe,
    check_rejects,
    finish_shard,
    is_shard_committed,
    run_engine,
    window_summary,
)
from mig_annotator.builder.plan import BuildPlan, ShardPlan, WindowPlan
from mig_annotator.builder.sources import SourceBatch, SourceReader
from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.probe.base import Probe

if TYPE_CHECKING:
    from ray.data import Dataset

#: Opens one probe; called once in each actor (it must pickle: a settings object and a function).
ProbeFactory = Callable[[], Probe]

#: Resource names an actor may ask for besides custom resources.
_RAY_RESOURCE_ARGS = ("num_cpus", "num_gpus", "memory")
#: CPUs a read task asks for: small, so that actors holding the cluster's CPUs never starve the reads.
READ_TASK_CPUS = 0.25


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray: where the cluster is, how many probes, what each probe's actor holds."""

    address: str | None = None  # None: start a local Ray instance; "auto", "ray://host:10001", "host:6379"
    num_probes: int = 1
    actor_resources: dict[str, float] = field(default_factory=lambda: {"num_cpus": 1.0})
    max_restarts: int = 4  # an actor that dies is started again this many times
    max_task_retries: int = 4  # a window whose actor died is retried this many times

    def __post_init__(self) -> None:
        if self.num_probes < 1:
            raise BuildError(f"--num-probes {self.num_probes}: must be at least 1")
        for name, amount in self.actor_resources.items():
            if amount < 0:
                raise BuildError(f"--actor-resources: {name}={amount} must not be negative")

    def resource_args(self) -> dict[str, Any]:
        """The resource arguments of ``Dataset.map_batches`` for each probe actor."""
        args: dict[str, Any] = {}
        custom = {}
        for name, amount in self.actor_resources.items():
            if name in _RAY_RESOURCE_ARGS:
                args[name] = amount
            else:
                custom[name] = amount
        if custom:
            args["resources"] = custom
        return args


def parse_actor_resources(text: str) -> dict[str, float]:
    """``--actor-resources``: a JSON object (``{"num_gpus": 1}``) or ``name=amount`` pairs joined by commas
    (``num_cpus=0.5,num_gpus=1``); names other than num_cpus/num_gpus/memory are custom Ray resources."""
    text = text.strip()
    try:
        if text.startswith("{"):
            loaded = json.loads(text)
            if not isinstance(loaded, dict):
                raise ValueError("not an object")
            pairs = list(loaded.items())
        else:
            pairs = []
            for item in filter(None, (part.strip() for part in text.split(","))):
                name, sep, amount = item.partition("=")
                if not sep or not name.strip():
                    raise ValueError(f"{item!r} is not name=amount")
                pairs.append((name.strip(), amount.strip()))
        return {str(name): float(amount) for name, amount in pairs}
    except (ValueError, TypeError) as error:
        raise BuildError(
            f"--actor-resources {text!r}: {error}; write e.g. 'num_gpus=1' or '{{\"num_cpus\": 0.5}}'"
        ) from error


def run_ray_build(
    plan: BuildPlan,
    probe_factory: ProbeFactory,
    options: RayOptions | None = None,
    observer: BuildObserver | None = None,
) -> BuildResult:
    """Build (or finish building) the dataset the plan describes on Ray, one probe per actor."""
    options = options or RayOptions()

    def build_shards(observer: BuildObserver) -> None:
        _RayShards(plan, probe_factory, options, observer).run()

    return run_engine(plan, build_shards, observer)


# ------------------------------------------------------------------------------------------------ driver


class _RayShards:
    """Runs the Ray Data job over the uncommitted windows and commits what comes back."""

    def __init__(
        self, plan: BuildPlan, probe_factory: ProbeFactory, options: RayOptions, observer: BuildObserver
    ) -> None:
        self._plan = plan
        self._probe_factory = probe_factory
        self._options = options
        self._observer = observer
        self._rows_schema = ck.work_rows_schema(plan.output_schema)

    def run(self) -> None:
        layout = self._plan.layout
        pending: dict[int, list[WindowPlan]] = {}
        for shard in self._plan.shards:
            if is_shard_committed(self._plan, shard):
                continue
            windows = [w for w in shard.windows if not layout.window_done(shard.index, w.index).is_file()]
            if windows:
                pending[shard.index] = windows
            else:
                finish_shard(self._plan, shard)  # killed between its last window and its part file
        if not pending:
            return
        waiting = {index: {w.index for w in windows} for index, windows in pending.items()}
        shards = {shard.index: shard for shard in self._plan.shards}
        with _RaySession(self._options.address):
            import ray.exceptions

            try:
                for result in _iter_results(self._dataset(pending)):
                    self._commit(shards[result.shard], result)
                    waiting[result.shard].discard(result.window)
                    if not waiting[result.shard]:
                        finish_shard(self._plan, shards[result.shard])
            except ray.exceptions.RayError as error:  # a probe that fails, an actor that cannot start
                raise BuildError(f"the Ray job failed: {error}") from error
        unfinished = sorted(index for index, left in waiting.items() if left)
        if unfinished:
            raise BuildError(f"the Ray job ended without scoring every window of shards {unfinished}")

    def _dataset(self, pending: dict[int, list[WindowPlan]]) -> Dataset:
        import ray.data

        source = window_source(self._plan, pending)
        dataset = ray.data.read_datasource(source, override_num_blocks=len(pending), num_cpus=READ_TASK_CPUS)
        options = self._options
        with warnings.catch_warnings():
            # Ray 2.60 deprecates passing actor options such as max_restarts through map_batches' keyword
            # arguments (removal announced for 2.64) and offers no replacement; without them Ray Data
            # restarts and retries without limit. We pin ray 2.60.* and keep the bound.
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            return dataset.map_batches(
                WindowScorer,
                fn_constructor_args=(self._plan, self._probe_factory),
                batch_size=1,  # one window per call: a retried call redoes one window
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=options.num_probes),
                zero_copy_batch=True,
                **options.resource_args(),
                max_restarts=options.max_restarts,
                max_task_retries=options.max_task_retries,
            )

    def _commit(self, shard: ShardPlan, result: ScoredWindow) -> None:
        """Commit a scored window as the local engine does: rejects, groups, then the ``done`` marker."""
        layout = self._plan.layout
        if layout.window_done(shard.index, result.window).is_file():
            return  # committed already (a window retried after its result arrived)
        check_rejects(self._plan, result.rejects)
        rejects_path = layout.window_rejects(shard.index, result.window)
        if result.rejects and not rejects_path.is_file():
            ck.write_rejects(rejects_path, result.rejects)
            self._observer.on_rows(len(result.rejects), 0, len(result.rejects), 0)
        for index, (size, group) in enumerate(zip(result.group_sizes, result.groups, strict=True)):
            if ck.is_group_committed(layout, shard.index, result.window, index):
                continue
            check_rejects(self._plan, group.rejects)
            ck.write_group(
                layout,
                shard.index,
                result.window,
                index,
                group.rows,
                group.rejects,
                group.stats,
                self._rows_schema,
            )
            self._observer.on_rows(
                size, group.rows.num_rows, len(group.rejects), int(group.stats["tokens_forwarded"])
            )
        ck.write_marker(
            layout.window_done(shard.index, result.window),
            window_summary(result.prepare_seconds, len(result.rejects)),
        )


class _RaySession:
    """Connect to ``address`` (or start a local Ray) unless Ray is connected already; disconnect after."""

    def __init__(self, address: str | None) -> None:
        self._address = address
        self._started = False

    def __enter__(self) -> None:
        try:
            import ray
        except ImportError as error:
            raise BuildError(
                "--engine ray needs Ray: pip install 'mig-annotator[ray]' (ray[data])"
            ) from error
        if not ray.is_initialized():
            try:
                ray.init(address=self._address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as error:
                raise BuildError(f"--ray-address {self._address}: cannot connect to Ray ({error})") from error
            self._started = True

    def __exit__(self, *exc_info: object) -> None:
        if self._started:
            import ray

            ray.shutdown()


def _iter_results(dataset: Dataset) -> Iterator[ScoredWindow]:
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for payload in batch.column("result").to_pylist():
            yield pickle.loads(payload)


# ------------------------------------------------------------------------------------------- read side


@dataclass(frozen=True)
class WindowBlock:
    """One window's input rows, as a Ray Data block carries it."""

    shard: int
    window: int
    batch: SourceBatch


def _block(shard: int, window: int, batch: SourceBatch) -> pa.Table:
    return pa.table(
        {
            "shard": pa.array([shard], pa.int64()),
            "window": pa.array([window], pa.int64()),
            "rows": pa.array([len(batch)], pa.int64()),
            "payload": pa.array([pickle.dumps(WindowBlock(shard, window, batch))], pa.binary()),
        }
    )


def read_shard_windows(plan: BuildPlan, shard: ShardPlan, windows: list[WindowPlan]) -> Iterator[pa.Table]:
    """Blocks for the given windows of a shard, read with the builder's reader.

    The reader starts at the input file that holds the shard's first row (row counts from the plan's
    fingerprints), so a read task reads its shard's file(s) only, from their start to the shard's end.
    """
    counts = [item.rows for item in plan.identity.inputs]
    starts = [0]
    for rows in counts:
        starts.append(starts[-1] + rows)
    first_file = bisect.bisect_right(starts, shard.start) - 1
    reader = SourceReader(
        plan.files[first_file:],
        plan.schemas[first_file:],
        plan.kept_schema,
        [column.source for column in plan.kept],
        read_rows=min(plan.settings.window_rows, 4096),
    )
    offset = starts[first_file]  # global index of the reader's first row
    wanted = {w.index for w in windows}
    position = shard.start - offset
    while position > 0:  # skip the file's rows before the shard
        taken = len(reader.take(min(position, 4096)))
        if taken == 0:
            raise InputError("the inputs ended early: they changed while the build was running")
        position -= taken
    for window in shard.windows:
        batch = reader.take(window.rows)
        if len(batch) != window.rows:
            raise InputError("the inputs ended early: they changed while the build was running")
        if window.index in wanted:
            yield _block(shard.index, window.index, dataclasses.replace(batch, start=window.start))


def _window_source_class() -> type:
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class _WindowSource(Datasource):
        def __init__(self, plan: BuildPlan, pending: dict[int, list[WindowPlan]]) -> None:
            self._plan = plan
            self._pending = pending

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, **kwargs: Any) -> list[ReadTask]:
            tasks = []
            shards = {shard.index: shard for shard in self._plan.shards}
            for index, windows in sorted(self._pending.items()):
                shard, plan = shards[index], self._plan
                metadata = BlockMetadata(
                    num_rows=len(windows), size_bytes=None, input_files=None, exec_stats=None
                )
                tasks.append(
                    ReadTask(
                        functools.partial(read_shard_windows, plan, shard, windows),
                        metadata,
                    )
                )
            return tasks

    return _WindowSource


def window_source(plan: BuildPlan, pending: dict[int, list[WindowPlan]]) -> Any:
    """A Ray Data datasource over the pending windows (``{shard index: windows}``); one read task a shard."""
    return _window_source_class()(plan, pending)


# ----------------------------------------------------------------------------------------- actor side


@dataclass
class ScoredWindow:
    """What an actor sends back for one window: everything the driver commits."""

    shard: int
    window: int
    rejects: list[dict[str, Any]]  # rejected before scoring
    prepare_seconds: float
    group_sizes: list[int]
    groups: list[GroupResult]


class WindowScorer:
    """A Ray Data actor: one probe, one engine :class:`Annotator`; scores one window per call."""

    def __init__(self, plan: BuildPlan, probe_factory: ProbeFactory) -> None:
        probe = probe_factory()
        check_probe(plan, probe)
        self._annotator = Annotator(probe, plan.settings.scoring)
        self._windows = WindowAnnotator.for_plan(plan, self._annotator)

    def __call__(self, blocks: pa.Table) -> pa.Table:
        results = []
        for payload in blocks.column("payload").to_pylist():
            block: WindowBlock = pickle.loads(payload)
            prepared = self._windows.prepare(block.batch)
            groups = [self._windows.score(block.batch, group) for group in prepared.groups]
            scored = ScoredWindow(
                block.shard,
                block.window,
                prepared.rejects,
                prepared.seconds,
                [len(group) for group in prepared.groups],
                groups,
            )
            results.append(pickle.dumps(scored))
        return pa.table({"result": pa.array(results, pa.binary())})

    def __del__(self) -> None:
        annotator = getattr(self, "_annotator", None)
        if annotator is not None:
            annotator.close()
