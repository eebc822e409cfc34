"""The migration runner: validate history, apply pending files, check the resulting structure.

Why hand-written: none of the maintained runners we know (alembic, yoyo, pgmigrate, dbmate)
both records a content checksum per file *and* records the file in the same transaction as its
DDL while also repairing INVALID indexes left by a failed ``CREATE INDEX CONCURRENTLY``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, LiteralString

import psycopg
from psycopg import sql

from migrate.files import MigrationFile, load_migrations, split_statements
from migrate.schema import find_drift, load_expected_schema
from pgconn import first_line

# Key of the session-level advisory lock that serialises runners ("migrate" in ASCII).
LOCK_KEY = 0x6D696772617465
HISTORY_TABLE = "schema_migrations"

FileState = Literal["applied", "pending", "changed", "missing"]


class MigrationError(Exception):
    """Base class of the runner's errors; its message is one line meant for a person."""


class MigrationRefusedError(MigrationError):
    """The recorded history and the files disagree; nothing was run."""


class MigrationFailedError(MigrationError):
    """A file failed while running."""


class MigrationLockTimeoutError(MigrationError):
    """Another runner kept the advisory lock for longer than we were willing to wait."""


class SchemaDriftError(MigrationError):
    """The live structure lacks tables, columns or indexes the migrations should have made."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("schema drift: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class FileStatus:
    """One row of ``migrate status``."""

    version: str
    name: str
    state: FileState
    applied_at: datetime | None = None
    duration_ms: int | None = None


@dataclass
class ApplyReport:
    """What one ``apply`` did; serialisable as the Lambda's JSON response."""

    applied: list[dict[str, Any]] = field(default_factory=list)
    repaired_indexes: list[str] = field(default_factory=list)
    already_applied: int = 0
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _HistoryRow:
    version: str
    name: str
    checksum: str
    applied_at: datetime
    duration_ms: int


class Runner:
    """Applies the files of one folder to one database, over an autocommit connection."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        directory: Path,
        *,
        lock_wait_s: float = 300.0,
        ddl_lock_timeout_ms: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not conn.autocommit:
            raise ValueError("the runner needs an autocommit connection (it manages transactions)")
        self._conn = conn
        self._directory = directory
        self._lock_wait_s = lock_wait_s
        self._ddl_lock_timeout_ms = ddl_lock_timeout_ms
        self._clock = clock

    # -- public operations -------------------------------------------------------------------

    def status(self) -> list[FileStatus]:
        """Every file and every recorded version, with its state; runs no DDL."""
        files = load_migrations(self._directory)
        history = self._read_history() if self._history_exists() else {}
        rows: list[FileStatus] = []
        for file in files:
            row = history.get(file.version)
            if row is None:
                rows.append(FileStatus(file.version, file.name, "pending"))
            else:
                state: FileState = "applied" if row.checksum == file.checksum else "changed"
                rows.append(
                    FileStatus(file.version, file.name, state, row.applied_at, row.duration_ms)
                )
        known = {file.version for file in files}
        rows += [
            FileStatus(row.version, row.name, "missing", row.applied_at, row.duration_ms)
            for row in history.values()
            if row.version not in known
        ]
        return sorted(rows, key=lambda status: status.version)

    def apply(self) -> ApplyReport:
        """Apply pending files in order under the advisory lock, then validate the structure."""
        files = load_migrations(self._directory)
        expected = load_expected_schema(self._directory)
        report = ApplyReport()
        with self._advisory_lock():
            self._ensure_history_table()
            history = self._read_history()
            pending = self._refuse_drift(files, history)
            report.already_applied = len(files) - len(pending)
            for file in pending:
                if file.transactional:
                    duration_ms = self._apply_in_transaction(file)
                else:
                    repaired, duration_ms = self._apply_outside_transaction(file)
                    report.repaired_indexes += repaired
                report.applied.append(
                    {"version": file.version, "name": file.name, "durationMs": duration_ms}
                )
            report.problems = find_drift(self._conn, expected)
        if report.problems:
            raise SchemaDriftError(report.problems)
        return report

    def validate(self) -> list[str]:
        """Check history against the files and the live structure; list every problem."""
        files = load_migrations(self._directory)
        expected = load_expected_schema(self._directory)
        problems: list[str] = []
        if self._history_exists():
            try:
                pending = self._refuse_drift(files, self._read_history())
            except MigrationRefusedError as exc:
                problems.append(str(exc))
            else:
                problems += [f"pending migration {file.path.name}" for file in pending]
        else:
            problems.append(f"no {HISTORY_TABLE} table: no migration was ever applied")
        return problems + find_drift(self._conn, expected)

    # -- internals -----------------------------------------------------------------------------

    @contextmanager
    def _advisory_lock(self) -> Iterator[None]:
        deadline = self._clock() + self._lock_wait_s
        while not self._scalar("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)):
            if self._clock() >= deadline:
                raise MigrationLockTimeoutError(
                    f"another migration runner held the lock for over {self._lock_wait_s:.0f} s; "
                    "wait for it to finish, or find it in pg_stat_activity"
                )
            time.sleep(0.1)
        try:
            self._conn.execute(
                "SELECT set_config('lock_timeout', %s, false)", (f"{self._ddl_lock_timeout_ms}ms",)
            )
            yield
        finally:
            # A broken connection releases the lock by itself; do not mask the original error.
            with suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))

    def _scalar(self, query: LiteralString, params: tuple[Any, ...] = ()) -> Any:
        row = self._conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def _history_exists(self) -> bool:
        return self._scalar("SELECT to_regclass(%s) IS NOT NULL", (HISTORY_TABLE,)) is True

    def _ensure_history_table(self) -> None:
        self._conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " version text PRIMARY KEY,"
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now(),"
                " duration_ms integer NOT NULL)"
            ).format(sql.Identifier(HISTORY_TABLE))
        )

    def _read_history(self) -> dict[str, _HistoryRow]:
        query = sql.SQL(
            "SELECT version, name, checksum, applied_at, duration_ms FROM {} ORDER BY version"
        ).format(sql.Identifier(HISTORY_TABLE))
        return {row[0]: _HistoryRow(*row) for row in self._conn.execute(query)}

    def _refuse_drift(
        self, files: list[MigrationFile], history: dict[str, _HistoryRow]
    ) -> list[MigrationFile]:
        """Return the pending files, or refuse when the applied history no longer matches."""
        by_version = {file.version: file for file in files}
        problems: list[str] = []
        for version, row in history.items():
            file = by_version.get(version)
            if file is None:
                problems.append(
                    f"{version}_{row.name}.sql was applied but is missing from the folder"
                )
            elif file.checksum != row.checksum:
                problems.append(
                    f"{file.path.name} changed after it was applied (sha256 {row.checksum[:12]}… "
                    f"recorded, {file.checksum[:12]}… on disk); restore it and add a new file"
                )
        latest = max(history, default="")
        pending = [file for file in files if file.version not in history]
        problems += [
            f"{file.path.name} is older than the latest applied version {latest}; "
            "rename it to a newer version"
            for file in pending
            if file.version < latest
        ]
        if problems:
            raise MigrationRefusedError("refusing to migrate: " + "; ".join(problems))
        return pending

    def _record(self, file: MigrationFile, duration_ms: int) -> None:
        self._conn.execute(
            sql.SQL(
                "INSERT INTO {} (version, name, checksum, duration_ms) VALUES (%s, %s, %s, %s)"
            ).format(sql.Identifier(HISTORY_TABLE)),
            (file.version, file.name, file.checksum, duration_ms),
        )

    def _apply_in_transaction(self, file: MigrationFile) -> int:
        started = time.perf_counter()
        try:
            with self._conn.transaction():
                # A multi-statement file runs as one simple query inside this transaction.
                self._conn.execute(file.sql.encode("utf-8"))
                duration_ms = round((time.perf_counter() - started) * 1000)
                self._record(file, duration_ms)
        except psycopg.Error as exc:
            raise MigrationFailedError(
                f"{file.path.name} failed and was rolled back, nothing from it applied: "
                f"{first_line(exc)}"
            ) from exc
        return duration_ms

    def _apply_outside_transaction(self, file: MigrationFile) -> tuple[list[str], int]:
        started = time.perf_counter()
        try:
            repaired = self._drop_invalid_indexes(file.concurrent_index_names())
            for statement in split_statements(file.sql):
                self._conn.execute(statement.encode("utf-8"))
            duration_ms = round((time.perf_counter() - started) * 1000)
            self._record(file, duration_ms)
        except psycopg.Error as exc:
            raise MigrationFailedError(
                f"{file.path.name} failed outside a transaction: {first_line(exc)}; "
                "fix the cause and rerun, the runner repairs INVALID indexes it left"
            ) from exc
        return repaired, duration_ms

    def _drop_invalid_indexes(self, names: list[str]) -> list[str]:
        """Drop INVALID indexes (a failed concurrent build) so that the file can rebuild them."""
        if not names:
            return []
        invalid = [
            row[0]
            for row in self._conn.execute(
                "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                "WHERE NOT x.indisvalid AND i.relnamespace = current_schema()::regnamespace "
                "AND i.relname = ANY(%s) ORDER BY i.relname",
                (names,),
            )
        ]
        for name in invalid:
            self._conn.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name))
            )
        return invalid
