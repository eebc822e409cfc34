"""The migration runner against a real PostgreSQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict

from migrate.cli import main as migrate_main
from migrate.files import load_migrations
from migrate.handler import lambda_handler
from migrate.runner import (
    ApplyReport,
    MigrationFailedError,
    MigrationRefusedError,
    Runner,
)
from tests.support import MIGRATIONS_DIR

pytestmark = pytest.mark.integration

EXPECTED_VERSIONS = [file.version for file in load_migrations(MIGRATIONS_DIR)]


def _apply(url: str, directory: Path = MIGRATIONS_DIR) -> ApplyReport:
    with psycopg.connect(url, autocommit=True) as conn:
        return Runner(conn, directory).apply()


def _history(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT version, name, checksum, applied_at, duration_ms FROM schema_migrations "
            "ORDER BY version"
        ).fetchall()


def _relations(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ).fetchall()
    return {row[0] for row in rows}


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    """A private copy of the migrations folder that a test may add to or edit."""
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, target)
    return target


def test_apply_to_an_empty_database_records_every_file_with_its_checksum(empty_db: str) -> None:
    # GIVEN an empty database WHEN the migrations are applied
    report = _apply(empty_db)

    # THEN every file is applied in order, recorded with its sha256, and the structure is valid
    assert [entry["version"] for entry in report.applied] == EXPECTED_VERSIONS
    history = _history(empty_db)
    files = {file.version: file for file in load_migrations(MIGRATIONS_DIR)}
    assert [row[0] for row in history] == EXPECTED_VERSIONS
    for version, name, checksum, applied_at, duration_ms in history:
        assert (name, checksum) == (files[version].name, files[version].checksum)
        assert applied_at is not None
        assert duration_ms >= 0
    assert report.problems == []
    assert {"tenants", "leads", "channel_limits", "dispatches", "dry_run_log"} <= _relations(
        empty_db
    )


def test_rerun_is_a_no_op(empty_db: str) -> None:
    _apply(empty_db)
    before = _history(empty_db)

    report = _apply(empty_db)

    assert report.applied == []
    assert report.already_applied == len(EXPECTED_VERSIONS)
    assert _history(empty_db) == before


def test_two_runners_started_together_apply_each_file_exactly_once(empty_db: str) -> None:
    # GIVEN two runners released at the same instant
    barrier = threading.Barrier(2)
    reports: list[ApplyReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(empty_db, autocommit=True) as conn:
                runner = Runner(conn, MIGRATIONS_DIR)
                barrier.wait()
                reports.append(runner.apply())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # THEN both succeed, one applied everything and the other found nothing to do
    assert errors == []
    applied = sorted(entry["version"] for report in reports for entry in report.applied)
    assert applied == EXPECTED_VERSIONS
    assert sorted(len(report.applied) for report in reports) == [0, len(EXPECTED_VERSIONS)]
    assert [row[0] for row in _history(empty_db)] == EXPECTED_VERSIONS


def test_an_edited_applied_file_is_refused_and_nothing_changes(
    empty_db: str, migrations_copy: Path
) -> None:
    # GIVEN an applied history, then an edit to an applied file and a new pending file
    _apply(empty_db, migrations_copy)
    before = _history(empty_db)
    edited = migrations_copy / "0002_leads.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
    (migrations_copy / "0099_new_table.sql").write_text("CREATE TABLE should_not_exist (x int);")

    # WHEN the runner is asked to apply THEN it refuses, naming the file
    with pytest.raises(MigrationRefusedError, match=r"0002_leads\.sql changed"):
        _apply(empty_db, migrations_copy)

    # AND nothing ran: history is unchanged and the new table does not exist
    assert _history(empty_db) == before
    assert "should_not_exist" not in _relations(empty_db)


def test_a_missing_applied_file_is_refused(empty_db: str, migrations_copy: Path) -> None:
    _apply(empty_db, migrations_copy)
    (migrations_copy / "0006_dispatches_indexes.sql").unlink()

    with pytest.raises(MigrationRefusedError, match=r"0006_dispatches_indexes\.sql was applied"):
        _apply(empty_db, migrations_copy)


def test_a_file_failing_midway_leaves_schema_and_history_unchanged(
    empty_db: str, migrations_copy: Path
) -> None:
    _apply(empty_db, migrations_copy)
    before = _history(empty_db)
    (migrations_copy / "0099_breaks.sql").write_text(
        "CREATE TABLE half_done (x int);\n"
        "ALTER TABLE leads ADD COLUMN half_done_col int;\n"
        "SELECT 1 / 0;\n"
    )

    with pytest.raises(MigrationFailedError, match=r"0099_breaks\.sql failed.*division by zero"):
        _apply(empty_db, migrations_copy)

    assert _history(empty_db) == before
    assert "half_done" not in _relations(empty_db)
    with psycopg.connect(empty_db) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'leads'"
        ).fetchall()
    assert ("half_done_col",) not in columns


def test_a_failed_concurrent_index_build_is_repaired_on_rerun(
    empty_db: str, migrations_copy: Path
) -> None:
    # GIVEN duplicate data that makes a concurrent unique index build fail midway
    _apply(empty_db, migrations_copy)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE tags (v int)")
        conn.execute("INSERT INTO tags VALUES (1), (1)")
    (migrations_copy / "0099_tags_unique.sql").write_text(
        "-- transactional: false\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS tags_v_uniq "
        "ON tags (v);\n"
    )
    with pytest.raises(MigrationFailedError, match=r"0099_tags_unique\.sql failed outside"):
        _apply(empty_db, migrations_copy)
    with psycopg.connect(empty_db) as conn:
        state = conn.execute(
            "SELECT x.indisvalid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE i.relname = 'tags_v_uniq'"
        ).fetchone()
    assert state == (False,), "the failed build must leave an INVALID index for this test"

    # WHEN the data is fixed and the runner reruns
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("DELETE FROM tags WHERE ctid <> (SELECT min(ctid) FROM tags)")
    report = _apply(empty_db, migrations_copy)

    # THEN the INVALID index was dropped and rebuilt valid, and the file is recorded
    assert report.repaired_indexes == ["tags_v_uniq"]
    assert [entry["version"] for entry in report.applied] == ["0099"]
    with psycopg.connect(empty_db) as conn:
        state = conn.execute(
            "SELECT x.indisvalid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE i.relname = 'tags_v_uniq'"
        ).fetchone()
    assert state == (True,)


def test_validation_catches_a_dropped_index_and_a_missing_column(
    empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _apply(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("DROP INDEX dry_run_log_tenant_time_idx")
        conn.execute("ALTER TABLE leads DROP COLUMN last_inbound_at")

    code = migrate_main(["validate"], environ={"DATABASE_URL": empty_db})

    out = capsys.readouterr().out
    assert code == 1
    assert "missing index dry_run_log_tenant_time_idx on dry_run_log" in out
    assert "missing column leads.last_inbound_at" in out


def test_validate_passes_on_a_fully_migrated_database(
    migrated_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert migrate_main(["validate"], environ={"DATABASE_URL": migrated_db}) == 0
    assert "schema valid" in capsys.readouterr().out


def test_status_lists_applied_and_pending_files(
    empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert migrate_main(["status"], environ={"DATABASE_URL": empty_db}) == 0
    out = capsys.readouterr().out
    assert f"0 applied, {len(EXPECTED_VERSIONS)} pending" in out

    _apply(empty_db)
    assert migrate_main(["status"], environ={"DATABASE_URL": empty_db}) == 0
    out = capsys.readouterr().out
    assert re.search(r"^0007\s+dry_run_log\s+applied\s+\d{4}-", out, re.MULTILINE)
    assert f"{len(EXPECTED_VERSIONS)} applied, 0 pending" in out


def test_an_unreachable_database_gives_one_line_and_exit_code_2() -> None:
    # GIVEN a URL where nothing listens (port 1 on loopback refuses at once)
    env = {"DATABASE_URL": "postgresql://agent:s3cret@127.0.0.1:1/leadsdb", "PATH": ""}

    # WHEN the CLI runs in its own interpreter
    completed = subprocess.run(
        [sys.executable, "-m", "migrate", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # THEN one line names host and database and the cause, with no traceback and no password
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert "cannot connect to host=127.0.0.1 port=1 dbname=leadsdb" in lines[0]
    assert "refused" in lines[0].lower()
    assert "Traceback" not in completed.stderr
    assert "s3cret" not in completed.stderr


def test_no_database_configured_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert migrate_main(["status"], environ={}) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("migrate: no database configured: set DATABASE_URL")


@pytest.mark.usefixtures("aws_env")
def test_lambda_handler_applies_migrations_from_a_moto_secret(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an RDS-format secret in (moto's) Secrets Manager pointing at the test database
    params = conninfo_to_dict(empty_db)
    secret = {
        "engine": "postgres",
        "host": params["host"],
        "port": int(params.get("port") or 5432),
        "username": params["user"],
        "password": params.get("password") or "",
        "dbname": params["dbname"],
    }
    with mock_aws():
        arn = boto3.client("secretsmanager").create_secret(
            Name="micro-agent/db", SecretString=json.dumps(secret)
        )["ARN"]
        monkeypatch.delenv("DATABASE_URL", raising=False)
        monkeypatch.setenv("DB_SECRET_ARN", arn)

        # WHEN the handler is invoked as pulumi's Invocation would
        report = lambda_handler({"action": "apply", "migrationsHash": "abc"}, None)
        again = lambda_handler({"action": "apply"}, None)

    # THEN it applied every file, reports it as JSON, and a second invocation is a no-op
    assert [entry["version"] for entry in report["applied"]] == EXPECTED_VERSIONS
    assert report["request"] == {"migrationsHash": "abc"}
    assert report["problems"] == []
    assert again["applied"] == []
    json.dumps(report, default=str)
    assert [row[0] for row in _history(empty_db)] == EXPECTED_VERSIONS


def test_lambda_handler_rejects_an_unknown_action() -> None:
    with pytest.raises(ValueError, match="action: expected one of apply, status, validate"):
        lambda_handler({"action": "drop-everything"}, None)
