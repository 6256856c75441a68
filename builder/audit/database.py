"""A read-only DuckDB view over built datasets and the service's audit log.

Views: ``annotations`` (one row per annotated trace, plus ``dataset``, ``row_key``, ``n_steps``,
``v_final`` = v_K, ``v_gain`` = v_K - v_0 and ``step_rewards``), ``steps`` (one row per step: ``k``,
``reward``, and for built datasets ``text``, ``v``, ``mig``, ``watermark``), and ``rejects`` when a
dataset has rejects. Built datasets and the service's audit log (:class:`schemas.api.AuditRecord` rows:
``v_final``, ``n_steps`` and ``step_rewards`` instead of the step records) mix in one view.

The views are written to a DuckDB file in a private temporary folder, which is then opened read-only; before
any query runs, spilling to a temp folder is turned off, external access is disabled with only the sources'
own files readable (no allowed directory), and the configuration is locked. Every query is bounded
(:class:`AuditLimits`): DuckDB's ``memory_limit`` and ``threads``, and a statement timeout that interrupts the
connection from a timer thread; a query over a limit fails with an error naming the limit and its flag.

User SQL must be a single SELECT, or an EXPLAIN [ANALYZE] of a single SELECT: DuckDB parses it
(``extract_statements``, ``tokenize``) and the type of the statement it would execute decides, since
``EXPLAIN ANALYZE`` runs its statement and a ``COPY ... TO`` could overwrite an allowed file.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field

from mig_annotator.builder.audit.address_space import address_space_growth_cap, value_bytes
from mig_annotator.builder.errors import DatasetError
from mig_annotator.builder.layout import OutputLayout

SourceKind = Literal["dataset", "log"]
_EXPLAIN_OPTIONS = frozenset({"ANALYZE", "ANALYSE"})
MB = 1 << 20
FETCH_ROWS = 2048  # one DuckDB vector: a result is pulled into Python this many rows at a time
ADDRESS_SPACE_MARGIN = 256 * MB  # threads' stacks and malloc arenas, the Python side of a chunk


class AuditQueryError(DatasetError):
    """A query was refused or failed."""


class AuditLimits(BaseModel):
    """Bounds on every audit query (canned reports and ``--sql``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_limit_mb: int = Field(default=1024, ge=16, description="DuckDB memory_limit (--memory-limit-mb).")
    timeout_s: float = Field(default=60.0, gt=0, description="Statement timeout in seconds (--timeout-s).")
    threads: int = Field(default=2, ge=1, description="DuckDB worker threads (--threads).")
    max_rows: int = Field(
        default=100_000, ge=1, description="Most rows an --sql result may hold (--max-rows)."
    )
    max_result_mb: int = Field(
        default=256,
        ge=1,
        description="Most megabytes an --sql result may hold, its values' sizes summed (--max-result-mb).",
    )


@dataclass(frozen=True)
class AuditSource:
    """Annotation files from one built dataset or one audit-log folder."""

    name: str
    kind: SourceKind
    files: list[Path]
    rejects: Path | None
    complete: bool


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def discover_sources(paths: Sequence[Path]) -> list[AuditSource]:
    """Built datasets (folders with ``_manifest.json``), audit-log folders of Parquet segments, or files."""
    if not paths:
        raise DatasetError("give at least one dataset folder or audit log")
    sources: list[AuditSource] = []
    names: set[str] = set()
    for path in paths:
        layout = OutputLayout(path)
        if path.is_dir() and layout.manifest.is_file():
            files, kind = layout.parts(), "dataset"
            rejects = layout.rejects if layout.rejects.is_file() else None
            complete = layout.success.is_file()
            if not files:
                raise DatasetError(f"{path}: the build has written no part files yet")
        elif path.is_dir():
            files = sorted(
                item
                for item in path.rglob("*.parquet")
                if not any(part.startswith(("_", ".")) for part in item.relative_to(path).parts)
            )
            kind, rejects, complete = "log", None, True
            if not files:
                raise DatasetError(
                    f"{path}: no built dataset (_manifest.json) and no Parquet audit log files"
                )
        elif path.is_file() and path.name.endswith(".parquet"):
            files, kind, rejects, complete = [path], "log", None, True
        else:
            raise DatasetError(f"{path}: not a built dataset folder, an audit-log folder or a .parquet file")
        name = path.resolve().name
        while name in names:
            name += "+"
        names.add(name)
        sources.append(AuditSource(name, kind, [f.resolve() for f in files], rejects, complete))  # type: ignore[arg-type]
    return sources


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _file_list(files: Sequence[Path]) -> str:
    return "[" + ", ".join(_literal(str(path)) for path in files) + "]"


class AuditDatabase:
    """A read-only DuckDB database whose views read the sources' files, and nothing else."""

    def __init__(self, sources: Sequence[AuditSource], limits: AuditLimits | None = None) -> None:
        self.sources = list(sources)
        self.limits = limits or AuditLimits()
        self._folder = tempfile.TemporaryDirectory(prefix="mig-audit-")
        path = str(Path(self._folder.name) / "views.duckdb")
        no_extensions = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        try:
            self._con = duckdb.connect(path, config=no_extensions)
            try:
                self._register_views()
            finally:
                self._con.close()
            self._con = duckdb.connect(path, read_only=True, config=no_extensions)
        except duckdb.Error as error:
            self._folder.cleanup()
            raise DatasetError(f"cannot read the audit sources: {error}") from error
        allowed = [str(path) for source in self.sources for path in source.files]
        allowed += [str(source.rejects) for source in self.sources if source.rejects is not None]
        self._con.execute("SET temp_directory = ''")  # no spilling, and no temp folder on the allowed list
        self._con.execute("SET allowed_directories = []")
        self._con.execute(f"SET allowed_paths = {_file_list([Path(p) for p in allowed])}")
        self._con.execute(f"SET memory_limit = '{int(self.limits.memory_limit_mb)}MB'")
        self._con.execute(f"SET threads = {int(self.limits.threads)}")
        self._con.execute("SET preserve_insertion_order = false")  # less buffering in big results
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")
        self.columns = self._describe("annotations")
        self.step_columns = self._describe("steps")

    def _register_views(self) -> None:
        selects = [self._source_select(source) for source in self.sources]
        self._con.execute("CREATE VIEW annotations AS " + " UNION ALL BY NAME ".join(selects))
        columns = {row[0] for row in self._con.execute("DESCRIBE annotations").fetchall()}
        carried = [
            c for c in ("trace_id", "config_hash", "probe_model", "outcome", "process_reward") if c in columns
        ]
        head = "dataset, row_key" + "".join(f", {quote_identifier(c)}" for c in carried)
        parts = []
        if "steps" in columns:  # built datasets: the full step records
            parts.append(
                f"SELECT {head}, s.index AS k, s.text, s.v, s.mig, s.watermark, s.reward "
                "FROM (SELECT *, unnest(steps) AS s FROM annotations WHERE steps IS NOT NULL)"
            )
        if "step_rewards" in columns:  # audit logs: r_k only
            only_logs = " AND steps IS NULL" if "steps" in columns else ""
            parts.append(
                f"SELECT {head}, generate_subscripts(step_rewards, 1) AS k, unnest(step_rewards) AS reward "
                f"FROM annotations WHERE step_rewards IS NOT NULL{only_logs}"
            )
        if parts:
            self._con.execute("CREATE VIEW steps AS " + " UNION ALL BY NAME ".join(parts))
        rejects = [source for source in self.sources if source.rejects is not None]
        if rejects:
            self._con.execute(
                "CREATE VIEW rejects AS "
                + " UNION ALL BY NAME ".join(
                    f"SELECT {_literal(s.name)} AS dataset, * FROM read_parquet({_literal(str(s.rejects))})"
                    for s in rejects
                )
            )

    def _source_select(self, source: AuditSource) -> str:
        """One source's rows, with the columns every report reads derived where the files lack them."""
        scan = f"read_parquet({_file_list(source.files)}, union_by_name = true"
        columns = {row[0] for row in self._con.execute(f"DESCRIBE SELECT * FROM {scan})").fetchall()}
        derived = [f"{_literal(source.name)} AS dataset", "filename || ':' || file_row_number AS row_key"]
        v_final = "v_final"
        if "steps" in columns:
            v_final = "(CASE WHEN len(steps) = 0 THEN v0 ELSE steps[len(steps)].v END)"
            derived += [] if "n_steps" in columns else ["len(steps) AS n_steps"]
            derived += [] if "v_final" in columns else [f"{v_final} AS v_final"]
            derived += [] if "step_rewards" in columns else ["[s.reward FOR s IN steps] AS step_rewards"]
        if "v_gain" not in columns and "v0" in columns and ("steps" in columns or "v_final" in columns):
            derived.append(f"{v_final} - v0 AS v_gain")
        hidden = [name for name in ("filename", "file_row_number") if name not in columns]
        excluded = f" EXCLUDE ({', '.join(hidden)})" if hidden else ""
        return (
            f"SELECT *{excluded}, {', '.join(derived)} FROM {scan}, filename = true, file_row_number = true)"
        )

    def _describe(self, view: str) -> list[str]:
        views = {row[0] for row in self._con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        if view not in views:
            return []
        return [row[0] for row in self._con.execute(f"DESCRIBE {view}").fetchall()]

    def query(self, sql: str, parameters: Sequence[Any] | None = None) -> QueryResult:
        """Run trusted SQL (the canned reports), within the limits."""
        return self._run(sql, parameters or [], lambda cursor: cursor.fetchall())

    def _run(
        self,
        sql: str,
        parameters: Sequence[Any],
        fetch: Callable[[duckdb.DuckDBPyConnection], list[tuple[Any, ...]]],
    ) -> QueryResult:
        timed_out = threading.Event()

        def interrupt() -> None:
            timed_out.set()
            self._con.interrupt()

        timer = threading.Timer(self.limits.timeout_s, interrupt)
        timer.daemon = True
        timer.start()
        try:
            cursor = self._con.execute(sql, parameters)
            columns = [item[0] for item in cursor.description or []]
            return QueryResult(columns, fetch(cursor))
        except duckdb.OutOfMemoryException as error:
            raise self._over_memory(error) from error
        except (duckdb.InterruptException, duckdb.Error) as error:
            if timed_out.is_set():
                raise AuditQueryError(
                    f"query stopped: it ran past the timeout of {self.limits.timeout_s:g} s "
                    "(raise it with --timeout-s)"
                ) from error
            raise AuditQueryError(f"query failed: {error}") from error
        finally:
            timer.cancel()

    def restrict(self, where: str) -> None:
        """From now on, ``annotations`` (and the views over it) hold only the rows where ``where`` holds.

        A temporary view of the same name shadows the stored one; calling it again replaces the filter.
        """
        catalog = self.query("SELECT current_database()").rows[0][0]
        stored = f"{quote_identifier(catalog)}.main.annotations"
        self.query(f"CREATE OR REPLACE TEMP VIEW annotations AS SELECT * FROM {stored} WHERE {where}")

    def user_query(self, sql: str) -> QueryResult:
        """Run one user SELECT (or EXPLAIN [ANALYZE] of one); anything else (COPY, ATTACH, INSTALL, SET, DDL,
        DML, or any of them inside EXPLAIN ...) is refused.

        The result is fetched in chunks and stopped once it passes ``max_rows`` rows or ``max_result_mb``
        (its values' sizes summed), with an error naming the flag; the process's address space may grow by
        at most the memory limit plus the result limit plus a margin while the query runs, so a value
        DuckDB builds outside its memory accounting (``list(range(1e9))``) fails as over the memory limit.
        """
        statement = self._single_statement(sql)
        executed, shown = self._executed_statement(statement)
        if executed.type != duckdb.StatementType.SELECT:
            raise AuditQueryError(f"--sql: only SELECT queries are allowed, got {shown}")
        limits = self.limits
        growth = (limits.memory_limit_mb + limits.max_result_mb) * MB + ADDRESS_SPACE_MARGIN
        try:
            with address_space_growth_cap(growth):
                return self._run(sql, [], self._bounded_fetch)
        except MemoryError as error:
            raise self._over_memory(error) from error

    def _bounded_fetch(self, cursor: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
        limits = self.limits
        rows: list[tuple[Any, ...]] = []
        size = 0
        while chunk := cursor.fetchmany(FETCH_ROWS):
            rows.extend(chunk)
            size += sum(value_bytes(row) for row in chunk)
            if len(rows) > limits.max_rows:
                raise AuditQueryError(
                    f"query stopped: the result has more than {limits.max_rows:,} rows (raise it with "
                    "--max-rows, or add a LIMIT or an aggregate)"
                )
            if size > limits.max_result_mb * MB:
                raise AuditQueryError(
                    f"query stopped: the result holds more than {limits.max_result_mb} MB (raise it with "
                    "--max-result-mb, or select fewer or shorter values)"
                )
        return rows

    def _over_memory(self, error: BaseException) -> AuditQueryError:
        return AuditQueryError(
            f"query stopped: it needs more than the memory limit of {self.limits.memory_limit_mb} MB "
            f"(raise it with --memory-limit-mb): {error}"
        )

    def _single_statement(self, sql: str) -> duckdb.Statement:
        try:
            statements = self._con.extract_statements(sql)
        except duckdb.Error as error:
            raise AuditQueryError(f"--sql: {error}") from error
        if len(statements) != 1:
            raise AuditQueryError(f"--sql: give exactly one statement, got {len(statements)}")
        return statements[0]

    def _executed_statement(self, statement: duckdb.Statement) -> tuple[duckdb.Statement, str]:
        """The statement DuckDB would run (the one inside EXPLAIN [ANALYZE] [(options)], recursively), and
        how to name it in a refusal, e.g. ``EXPLAIN ANALYZE COPY``."""
        words = _keywords(statement.query)
        if statement.type != duckdb.StatementType.EXPLAIN:
            # INSTALL and LOAD share the statement type LOAD: name what was written
            name = (
                words[0][1] if statement.type == duckdb.StatementType.LOAD and words else statement.type.name
            )
            return statement, name
        inner = _explained_text(statement.query)
        inner_statement = self._single_statement(inner)
        prefix = " ".join(word for _, word in words[:2] if word in ("EXPLAIN", *_EXPLAIN_OPTIONS))
        executed, shown = self._executed_statement(inner_statement)
        return executed, f"{prefix} {shown}"

    def close(self) -> None:
        self._con.close()
        self._folder.cleanup()

    def __enter__(self) -> AuditDatabase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _tokens(sql: str) -> list[tuple[int, str, duckdb.token_type]]:
    """DuckDB's tokens without comments: (offset, text, type)."""
    tokens = duckdb.tokenize(sql)
    ends = [offset for offset, _ in tokens[1:]] + [len(sql)]
    return [
        (offset, sql[offset:end].strip(), kind)
        for (offset, kind), end in zip(tokens, ends, strict=True)
        if kind != duckdb.token_type.comment
    ]


def _keywords(sql: str) -> list[tuple[int, str]]:
    """The leading keywords, upper-cased, with their offsets."""
    words = []
    for offset, text, kind in _tokens(sql):
        if kind != duckdb.token_type.keyword:
            break
        words.append((offset, text.upper()))
    return words


def _explained_text(sql: str) -> str:
    """The statement after ``EXPLAIN [ANALYZE] [(options)]``."""
    tokens = _tokens(sql)
    position = 1  # tokens[0] is EXPLAIN
    if position < len(tokens) and tokens[position][1].upper() in _EXPLAIN_OPTIONS:
        position += 1
    if position < len(tokens) and tokens[position][1] == "(":
        depth = 0
        for position in range(position, len(tokens)):  # noqa: B020 - continues from the options' start
            _, text, kind = tokens[position]
            if kind == duckdb.token_type.operator:
                depth += text.count("(") - text.count(")")
                if depth == 0:
                    break
        position += 1
    if position >= len(tokens):
        raise AuditQueryError("--sql: EXPLAIN without a statement")
    return sql[tokens[position][0] :]
