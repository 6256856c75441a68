"""Rescore a built dataset under new watermark, aggregation or SFT settings, without the probe.

A dataset row holds every ``v_k`` and its ``answer_tokens``, so the settings that act on ``v_k`` after the
probe pass (:data:`mig.reward_fields.RESCORABLE_FIELDS`) can be changed by re-deriving the reward fields
with the engine's own derivation (:func:`engine.reward_fields.rescore_annotation`). The new dataset has the
identity a full rebuild with the new settings would have (same inputs, probe and layout; the new scoring and
its ``config_hash``), the same rows, rejects and counts, and rewards equal to that rebuild's to rounding.
Any other setting (segmentation, prompt, context limit; the probe is not an option) is refused, naming it.

It runs in the builder's frame (:func:`builder.pipeline.run_engine`): the output folder is claimed, locked
and refused when it holds another build (``overwrite`` discards it); each shard's part file is written
atomically from the source's, then its rejects, then its completion marker, so a rescore killed at any
moment and run again skips the committed shards and loses or duplicates nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from mig_annotator.builder import checkpoints as ck
from mig_annotator.builder.annotate import GLOBAL_ROW
from mig_annotator.builder.errors import BuildError, DatasetError, OutputConflictError
from mig_annotator.builder.layout import OutputLayout
from mig_annotator.builder.manifest import BuildIdentity, Manifest, read_manifest, tokenizer_identity
from mig_annotator.builder.pipeline import (
    BuildObserver,
    BuildResult,
    claim_output,
    finished_manifest,
    is_shard_committed,
    run_engine,
)
from mig_annotator.builder.plan import BuildPlan, ShardPlan, cut_shards
from mig_annotator.builder.settings import BuildSettings
from mig_annotator.builder.sources import InputFile
from mig_annotator.builder.storage import write_parquet_atomic
from mig_annotator.builder.token_columns import TokenAligner, load_policy_tokenizer
from mig_annotator.engine.reward_fields import RESCORABLE_FIELDS, rescore_annotation, settings_needing_probe
from mig_annotator.schemas import ScoringConfig, TraceAnnotation
from mig_annotator.schemas.arrow import REJECT_SCHEMA, dataset_schema

#: The dataset columns a rescore rewrites (the token columns' rewards too, when the dataset has them).
REWARD_COLUMNS = ("v0", "steps", "process_reward", "max_reward", "sft_gate", "config_hash")
_ANNOTATION_COLUMNS = tuple(TraceAnnotation.model_fields)


class RescoreSettings(BaseModel):
    """A finished dataset in, the same dataset under ``scoring`` out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Path = Field(description="The finished dataset folder to rescore (read only).")
    out: Path = Field(description="The new dataset folder.")
    scoring: ScoringConfig = Field(
        description="The complete new scoring config; it may differ from the source's only in "
        f"{', '.join(RESCORABLE_FIELDS)}."
    )
    row_group_rows: int = Field(default=2048, ge=1, description="Rows per Parquet row group.")
    overwrite: bool = False


def source_manifest(source: Path) -> Manifest:
    """The manifest of the finished dataset in ``source``; :class:`DatasetError` when it is not one."""
    layout = OutputLayout(source)
    try:
        manifest = read_manifest(layout.manifest)
    except ValueError as error:
        raise DatasetError(f"{layout.manifest}: unreadable ({error})") from error
    if manifest is None or manifest.status != "complete" or not layout.success.is_file():
        raise DatasetError(f"{source}: not a finished build (no complete _manifest.json and _SUCCESS)")
    if manifest.counts is None:
        raise DatasetError(f"{layout.manifest}: has no counts")
    return manifest


def rescored_identity(old: BuildIdentity, scoring: ScoringConfig) -> BuildIdentity:
    """The identity a rebuild of ``old`` with ``scoring`` would have; :class:`BuildError` naming every
    setting that needs a probe pass."""
    needing = settings_needing_probe(old.scoring, scoring)
    if needing:
        changes = "; ".join(
            f"{name} ({_setting(old.scoring, name)!r} -> {_setting(scoring, name)!r})" for name in needing
        )
        raise BuildError(
            f"rescore re-derives rewards from v_k and can change only {', '.join(RESCORABLE_FIELDS)}; "
            f"these settings change what the probe reads and need a rebuild (mig-annotator build): {changes}"
        )
    return old.model_copy(update={"scoring": scoring, "config_hash": scoring.config_hash()})


@dataclass
class PreparedRescore:
    """A planned, claimed rescore: ``finished`` when the output already holds it, else :meth:`run` it."""

    plan: BuildPlan
    source: OutputLayout
    old_scoring: ScoringConfig
    finished: Manifest | None

    def run(self, observer: BuildObserver | None = None) -> BuildResult:
        """Rescore every shard not committed yet and finish the dataset (running it again resumes)."""
        aligner = _aligner(self.plan.identity)
        rejects = _rejects_by_shard(self.source, self.plan)

        def build_shards(observer: BuildObserver) -> None:
            for shard in self.plan.shards:
                if not is_shard_committed(self.plan, shard):
                    _rescore_shard(self, shard, aligner, rejects.get(shard.index, []), observer)

        return run_engine(self.plan, build_shards, observer)


def prepare_rescore(settings: RescoreSettings) -> PreparedRescore:
    """Check the source and the new settings, plan the output and claim its folder (nothing is written
    when it refuses)."""
    source = OutputLayout(settings.source)
    manifest = source_manifest(settings.source)
    old = manifest.identity
    identity = rescored_identity(old, settings.scoring)
    here, there = settings.source.resolve(), settings.out.resolve()
    if here == there or here in there.parents or there in here.parents:
        raise OutputConflictError(
            f"{settings.out}: rescore writes a new folder, not {settings.source} or one in it"
        )
    assert manifest.counts is not None
    shards = cut_shards(manifest.counts.input_rows, old.layout.shard_rows, old.layout.window_rows)
    parts = source.parts()
    if [path.name for path in parts] != [source.part(shard.index).name for shard in shards]:
        raise DatasetError(f"{settings.source}: expected {len(shards)} part files, found {len(parts)}")
    output_schema = _checked_parts_schema(parts, old)
    build = BuildSettings(
        inputs=[item.path for item in old.inputs],
        out=settings.out,
        preset=old.preset,  # type: ignore[arg-type]  # a preset the source was built with
        columns=old.columns,
        keep_columns=old.kept_columns,
        limit=old.limit,
        scoring=settings.scoring,
        policy_tokenizer=Path(old.policy_tokenizer.path) if old.policy_tokenizer else None,
        shard_rows=old.layout.shard_rows,
        window_rows=old.layout.window_rows,
        group_rows=old.layout.group_rows,
        row_group_rows=settings.row_group_rows,
        overwrite=settings.overwrite,
    )
    plan = BuildPlan(
        settings=build,
        layout=OutputLayout(settings.out),
        files=[InputFile(Path(item.path), item.format) for item in old.inputs],  # type: ignore[arg-type]
        schemas=[],
        identity=identity,
        id_present=old.id_column_used,
        kept=[],
        output_schema=output_schema,
        total_rows=manifest.counts.input_rows,
        shards=shards,
    )
    rejects = _rejects_by_shard(source, plan)
    for shard, part in zip(shards, parts, strict=True):
        rows = pq.ParquetFile(part).metadata.num_rows
        if rows + len(rejects.get(shard.index, [])) != shard.rows:
            raise DatasetError(
                f"{part}: {rows} rows + {len(rejects.get(shard.index, []))} rejects != {shard.rows} input "
                f"rows of shard {shard.index}: not this build's part file"
            )
    claim_output(plan)  # only now is anything written
    finished = None if settings.overwrite else finished_manifest(plan)
    return PreparedRescore(plan, source, old.scoring, finished)


def _checked_parts_schema(parts: list[Path], identity: BuildIdentity) -> pa.Schema:
    """The parts' common schema, after checking that every part file reads as Parquet (a truncated or
    random file fails here, by name) and holds the dataset's columns with their types and the kept columns
    the manifest records: :class:`DatasetError` naming the file, before anything is written."""
    fixed = dataset_schema(token_columns=identity.policy_tokenizer is not None)
    expected_count = len(fixed) + len(identity.kept_columns)
    schema: pa.Schema | None = None
    for part in parts:
        try:
            found = pq.ParquetFile(part).schema_arrow.remove_metadata()
        except (pa.ArrowException, OSError) as error:
            raise DatasetError(f"{part}: not a readable Parquet file ({_first_line(error)})") from error
        head = pa.schema(list(found)[: len(fixed)])
        if not head.equals(fixed) or len(found) != expected_count:
            missing = [f.name for f in fixed if found.get_field_index(f.name) < 0]
            detail = f"missing {', '.join(missing[:5])}" if missing else "other columns or types"
            raise DatasetError(
                f"{part}: not a part file of this dataset's schema ({detail}; expected the dataset "
                f"columns then {len(identity.kept_columns)} kept column(s))"
            )
        if schema is not None and not found.equals(schema):
            raise DatasetError(f"{part}: its columns differ from the first part file's ({parts[0]})")
        schema = found
    assert schema is not None
    return schema


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def rescore_dataset(settings: RescoreSettings, observer: BuildObserver | None = None) -> Manifest:
    """Write ``settings.out``: the dataset ``settings.source`` under ``settings.scoring``; its manifest.

    A finished rescore in ``settings.out`` is returned as it is; a partial one is resumed.
    """
    prepared = prepare_rescore(settings)
    if prepared.finished is not None:
        return prepared.finished
    return prepared.run(observer).manifest


def rescore_table(
    table: pa.Table, old: ScoringConfig, new: ScoringConfig, aligner: TokenAligner | None
) -> pa.Table:
    """``table`` (dataset rows scored under ``old``) with its reward columns re-derived under ``new``."""
    annotations = []
    for row in table.select(list(_ANNOTATION_COLUMNS)).to_pylist():
        annotation = TraceAnnotation.model_validate(row)
        try:
            annotations.append(rescore_annotation(annotation, old, new))
        except ValueError as error:
            raise BuildError(f"trace {annotation.trace_id!r}: cannot be rescored: {error}") from error
    dumped = [annotation.model_dump() for annotation in annotations]
    columns: dict[str, list[Any]] = {name: [row[name] for row in dumped] for name in REWARD_COLUMNS}
    if aligner is not None:
        columns["token_rewards"] = [item.token_rewards for item in aligner.columns(annotations)]
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        table = table.set_column(index, field, pa.array(values, type=field.type))
    return table


def _rescore_shard(
    prepared: PreparedRescore,
    shard: ShardPlan,
    aligner: TokenAligner | None,
    rejects: list[dict[str, Any]],
    observer: BuildObserver,
) -> None:
    """The shard's part file from the source's, then its rejects, then its completion marker."""
    plan, started = prepared.plan, time.perf_counter()
    totals: Counter[str] = Counter()

    part = prepared.source.part(shard.index)

    def tables() -> Iterator[pa.Table]:
        source = pq.ParquetFile(part)
        for batch in source.iter_batches(batch_size=plan.settings.row_group_rows):
            table = rescore_table(
                pa.Table.from_batches([batch]), prepared.old_scoring, plan.settings.scoring, aligner
            )
            totals["tokens_forwarded"] += sum(table.column("tokens_forwarded").to_pylist())
            totals["steps"] += sum(len(steps) for steps in table.column("steps").to_pylist())
            yield table.cast(plan.output_schema)

    layout = plan.layout
    try:  # a part whose footer reads but whose pages are damaged fails here: named, nothing committed
        annotated = write_parquet_atomic(
            tables(), plan.output_schema, layout.part(shard.index), plan.settings.row_group_rows
        )
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DatasetError(f"{part}: cannot be read ({_first_line(error)})") from error
    if annotated + len(rejects) != shard.rows:
        raise DatasetError(
            f"{prepared.source.part(shard.index)}: {annotated} rows + {len(rejects)} rejects "
            f"!= {shard.rows} input rows of shard {shard.index}"
        )
    ck.write_rejects(layout.shard_rejects(shard.index), rejects)
    marker = {
        "rows": shard.rows,
        "annotated": annotated,
        "rejected": len(rejects),
        "rejects_by_stage": dict(Counter(str(reject["stage"]) for reject in rejects)),
        "annotate_seconds": time.perf_counter() - started,
        "tokens_forwarded": float(totals["tokens_forwarded"]),  # the source's: the values came from them
        "probe_tokens": 0.0,  # a rescore forwards nothing
        "steps": float(totals["steps"]),
    }
    ck.write_marker(layout.shard_done(shard.index), marker)
    observer.on_rows(shard.rows, annotated, len(rejects), 0)


def _rejects_by_shard(source: OutputLayout, plan: BuildPlan) -> dict[int, list[dict[str, Any]]]:
    """The source's rejects by shard, each with its global input row (files in input order)."""
    offsets: dict[str, int] = {}
    start = 0
    for item in plan.identity.inputs:
        offsets[item.path] = start
        start += item.rows
    found: dict[int, list[dict[str, Any]]] = {}
    if not source.rejects.is_file():
        return found
    try:
        table = pq.read_table(source.rejects, schema=REJECT_SCHEMA)
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"{source.rejects}: not a readable rejects file ({_first_line(error)})") from error
    for reject in table.to_pylist():
        if reject["source_file"] not in offsets:
            raise DatasetError(f"{source.rejects}: a reject from {reject['source_file']}, not an input")
        global_row = offsets[reject["source_file"]] + reject["source_row"]
        found.setdefault(global_row // plan.settings.shard_rows, []).append(reject | {GLOBAL_ROW: global_row})
    return found


def _aligner(identity: BuildIdentity) -> TokenAligner | None:
    """The policy tokenizer the source's token columns were built with (checked by its fingerprint)."""
    recorded = identity.policy_tokenizer
    if recorded is None:
        return None
    path = Path(recorded.path)
    if not path.is_dir() or tokenizer_identity(path) != recorded:
        raise BuildError(
            f"policy_tokenizer {path}: missing or changed since the build (fingerprint "
            f"{recorded.fingerprint}); token_rewards need it: restore it, or rebuild"
        )
    return TokenAligner(load_policy_tokenizer(path))


def _setting(config: ScoringConfig, dotted: str) -> Any:
    value: Any = config
    for name in dotted.split("."):
        value = getattr(value, name)
    return value
