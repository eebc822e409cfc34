"""Command line: ``python -m migrate {status,apply,validate} [--dir DIR]``.

Exit codes: 0 done and valid; 1 refused, failed or drift found; 2 cannot reach or configure the
database (one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from migrate.files import MigrationFileError, default_migrations_dir
from migrate.maintenance import maintain
from migrate.runner import FileStatus, MigrationError, Runner
from migrate.settings import RetentionSettingError, retention_days
from pgconn import Connector, DatabaseConfigError, DatabaseSettings, first_line

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 2
APPLICATION_NAME = "micro-agent-migrate"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m migrate",
        description="Apply and check the forward-only SQL migrations (DATABASE_URL).",
    )
    parser.add_argument("command", choices=["status", "apply", "validate", "maintain"])
    parser.add_argument(
        "--dir", type=Path, default=None, help="migrations folder (default: the repository's)"
    )
    parser.add_argument(
        "--lock-wait", type=float, default=300.0, help="seconds to wait for another runner"
    )
    return parser


def format_status(rows: Sequence[FileStatus]) -> str:
    """Render status rows as an aligned plain-text table."""
    header = ("version", "name", "state", "applied_at", "ms")
    body = [
        (
            row.version,
            row.name,
            row.state,
            row.applied_at.strftime("%Y-%m-%d %H:%M:%S%z") if row.applied_at else "-",
            "-" if row.duration_ms is None else str(row.duration_ms),
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        for cells in [header, *body]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _maintain(conn: psycopg.Connection[Any], environ: dict[str, str]) -> int:
    report = maintain(conn, retention_days=retention_days(environ), today=datetime.now(UTC).date())
    print(f"kept {report.retention_days} days: history before {report.cutoff} removed")
    for name in report.created:
        print(f"created partition {name}")
    for name in report.dropped:
        print(f"dropped partition {name}")
    print(f"deleted {report.runs_deleted} old runs")
    return EXIT_OK


def _run(runner: Runner, command: str) -> int:
    if command == "status":
        rows = runner.status()
        print(format_status(rows))
        pending = sum(row.state == "pending" for row in rows)
        print(f"{len(rows) - pending} applied, {pending} pending")
        return EXIT_FAILED if any(row.state in ("changed", "missing") for row in rows) else EXIT_OK
    if command == "apply":
        report = runner.apply()
        for entry in report.applied:
            print(f"applied {entry['version']}_{entry['name']}.sql in {entry['durationMs']} ms")
        for index in report.repaired_indexes:
            print(f"repaired INVALID index {index} (dropped and rebuilt)")
        if not report.applied:
            print(f"nothing to apply ({report.already_applied} already applied)")
        print("structure valid")
        return EXIT_OK
    problems = runner.validate()
    if problems:
        print(f"drift found ({len(problems)}):")
        print("\n".join(f"  - {problem}" for problem in problems))
        return EXIT_FAILED
    print("schema valid: history matches the files and every table, column and index exists")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Run one command; return the process exit code."""
    args = _parser().parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    try:
        directory = args.dir if args.dir is not None else default_migrations_dir()
        # No statement or lock timeout: a migration may legitimately run and wait for long
        # (maintenance sets its own lock timeout).
        settings = DatabaseSettings.from_environ(env, statement_timeout_ms=0, lock_timeout_ms=0)
        if args.command == "maintain":
            retention_days(env)  # a bad setting is refused before connecting
    except (DatabaseConfigError, MigrationFileError, RetentionSettingError) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    connector = Connector(settings, application_name=APPLICATION_NAME)
    conn: psycopg.Connection[Any]
    try:
        conn = connector.connect(autocommit=True)
    except (psycopg.Error, DatabaseConfigError) as exc:
        print(
            f"migrate: cannot connect to {connector.describe()}: {first_line(exc)}",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    with conn:
        try:
            if args.command == "maintain":
                return _maintain(conn, env)
            return _run(Runner(conn, directory, lock_wait_s=args.lock_wait), args.command)
        except (MigrationError, MigrationFileError) as exc:
            print(f"migrate: {exc}", file=sys.stderr)
            return EXIT_FAILED
