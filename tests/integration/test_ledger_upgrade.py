"""Upgrading a database with history to the due-state schema, and ledger maintenance."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devtools.lambda_context import LocalLambdaContext
from dry_run import bootstrap, handler
from migrate.cli import main as migrate_main
from migrate.maintenance import maintain
from migrate.runner import Runner
from tests.support import MIGRATIONS_DIR, insert_leads, insert_tenant

pytestmark = pytest.mark.integration

NOON = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def rows(url: str, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode(), params).fetchall()


def invoke(url: str, event: dict[str, Any], now: datetime) -> dict[str, Any]:
    deps = bootstrap.build({"DATABASE_URL": url})
    try:
        return handler.handle(event, LocalLambdaContext(), deps=deps, clock=lambda: now)
    finally:
        deps.close()
        handler.metrics.clear_metrics()


@pytest.fixture
def seven_migrations(tmp_path: Path) -> Path:
    """The migrations as they were before the due state (0001-0007)."""
    target = tmp_path / "migrations"
    target.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("000[1-7]_*.sql")):
        shutil.copy(path, target / path.name)
    # Structure validation is the full set's business; here, nothing is expected.
    (target / "expected_schema.toml").write_text("[tables]\n")
    return target


def test_upgrading_keeps_the_history_and_derives_each_leads_due_state(
    empty_db: str, seven_migrations: Path
) -> None:
    # GIVEN a database on the old schema with a run's history
    with psycopg.connect(empty_db, autocommit=True) as conn:
        Runner(conn, seven_migrations).apply()
    with psycopg.connect(empty_db) as conn:
        insert_tenant(conn, "t-1", cooldown_hours=72)
        sent, deferred, skipped, fresh = (insert_leads(conn, "t-1", 1) for _ in range(4))
        (opted_out,) = insert_leads(conn, "t-1", 1, opted_out_at=NOON)
        history = [
            (sent[0], "would_send", "whatsapp_template", "key-1", None),
            (deferred[0], "deferred", "quiet_hours", None, NOON + timedelta(hours=18)),
            (skipped[0], "skipped", "no_eligible_channel", None, None),
        ]
        for lead_id, action, reason, key, not_before in history:
            conn.execute(
                "INSERT INTO dry_run_log (run_id, tenant_id, lead_id, channel, action, reason, "
                "dispatch_key, flag_enabled, not_before, decided_at) VALUES ('old-run', 't-1', "
                "%s, %s, %s, %s, %s, false, %s, %s)",
                (
                    lead_id,
                    "whatsapp" if action != "skipped" else None,
                    action,
                    reason,
                    key,
                    not_before,
                    NOON - timedelta(hours=1),
                ),
            )

    # WHEN the rest of the migrations apply
    with psycopg.connect(empty_db, autocommit=True) as conn:
        report = Runner(conn, MIGRATIONS_DIR).apply()

    # THEN the history is intact, with the lead's local date, and the run is registered
    assert report.problems == []
    assert rows(empty_db, "SELECT count(*), min(local_date), max(local_date) FROM dry_run_log") == [
        (3, date(2026, 11, 25), date(2026, 11, 25))
    ]
    assert rows(empty_db, "SELECT run_id, tenant_id FROM runs") == [("old-run", "t-1")]
    # and each lead's due state follows from its last decision
    state = {
        row[0]: row[1:]
        for row in rows(
            empty_db,
            "SELECT lead_id::text, ready, due_at::text, last_sent_at, recent_keys FROM lead_due "
            "WHERE mode = 'dry_run'",
        )
    }
    assert state[sent[0]] == (
        False,
        "2026-11-28 14:00:00+00",  # 72 h after the send
        NOON - timedelta(hours=1),
        ["key-1"],
    )
    assert state[deferred[0]][:2] == (False, "2026-11-26 09:00:00+00")  # its not_before
    assert state[skipped[0]][:2] == (False, "2026-11-28 14:00:00+00")  # the cooldown
    assert state[fresh[0]][:2] == (True, "-infinity")
    assert state[opted_out][:2] == (False, "infinity")  # parked until it changes
    # and a run after the upgrade takes only the lead that is due
    response = invoke(empty_db, {"tenantId": "t-1", "batchSize": 10}, NOON)
    assert [d["leadId"] for d in response["decisions"]] == fresh
    # and a replay of the old run still answers its decisions
    replay = invoke(empty_db, {"tenantId": "t-1", "batchSize": 10, "runId": "old-run"}, NOON)
    assert len(replay["decisions"]) == 3


def _partitions(url: str) -> list[str]:
    return [
        row[0]
        for row in rows(
            url,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'dry_run_log'::regclass ORDER BY 1",
        )
    ]


def test_maintenance_drops_months_past_the_retention_and_adds_the_next(migrated_db: str) -> None:
    # GIVEN history in January 2026 and November 2026, and runs of both times
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
        (lead,) = insert_leads(conn, "t-1", 1)
        conn.execute("SELECT dry_run_log_add_partition('2026-01-15')")
        for run_id, decided_at in (("old", datetime(2026, 1, 10, 15, tzinfo=UTC)), ("new", NOON)):
            conn.execute(
                "INSERT INTO runs (run_id, tenant_id, mode, started_at) "
                "VALUES (%s, 't-1', 'dry_run', %s)",
                (run_id, decided_at),
            )
            conn.execute(
                "INSERT INTO dry_run_log (run_id, tenant_id, lead_id, action, reason, "
                "flag_enabled, decided_at, local_date) "
                "VALUES (%s, 't-1', %s, 'skipped', 'no_eligible_channel', false, %s, %s)",
                (run_id, lead, decided_at, decided_at.date()),
            )
    assert "dry_run_log_2026_01" in _partitions(migrated_db)

    # WHEN maintenance keeping 400 days runs on 2026-12-01 (nothing is that old yet), then on
    # 2027-03-10 (January 2026 is), while a run's transaction reads the ledger
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        first = maintain(conn, retention_days=400, today=date(2026, 12, 1))
    reader = psycopg.connect(migrated_db, options="-c statement_timeout=5000")
    reader.execute("SELECT count(*) FROM dry_run_log WHERE local_date >= '2026-11-01'")
    result: dict[str, Any] = {}

    def run_maintenance() -> None:
        with psycopg.connect(migrated_db, autocommit=True, application_name="maint") as other:
            result["report"] = maintain(other, retention_days=400, today=date(2027, 3, 10))

    thread = threading.Thread(target=run_maintenance)
    thread.start()
    waited = 0.0
    while thread.is_alive() and waited < 10:
        waiting = rows(
            migrated_db,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'maint' "
            "AND wait_event_type = 'Lock'",
        )[0][0]
        if waiting:
            break
        time.sleep(0.05)
        waited += 0.05
    # the open transaction keeps reading and writing: maintenance waits for it, not it for
    # maintenance (a block would hit the reader's statement timeout)
    reader.execute("SELECT count(*) FROM dry_run_log WHERE local_date >= '2026-11-01'")
    reader.execute("INSERT INTO runs (run_id, tenant_id, mode) VALUES ('during', 't-1', 'dry_run')")
    reader.commit()
    reader.close()
    thread.join(timeout=60)

    # THEN January 2026 and its run are gone, November 2026 stays, the months ahead exist
    assert not thread.is_alive()
    report = result["report"]
    assert first.dropped == []
    # (live mode's history, live_log, is kept by the same rule)
    assert report.dropped == ["dry_run_log_2026_01", "live_log_2026_01"]
    assert report.runs_deleted == 1
    partitions = _partitions(migrated_db)
    assert "dry_run_log_2026_01" not in partitions
    assert {"dry_run_log_2026_11", "dry_run_log_2027_09"} <= set(partitions)
    assert rows(migrated_db, "SELECT run_id FROM runs ORDER BY 1") == [("during",), ("new",)]
    assert rows(migrated_db, "SELECT run_id FROM dry_run_log") == [("new",)]


def test_maintenance_from_the_command_line(
    migrated_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = migrate_main(
        ["maintain"], environ={"DATABASE_URL": migrated_db, "LEDGER_RETENTION_DAYS": "400"}
    )

    assert code == 0
    assert "kept 400 days" in capsys.readouterr().out


def test_a_bad_retention_setting_is_one_line_and_exit_code_2(
    migrated_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = migrate_main(
        ["maintain"], environ={"DATABASE_URL": migrated_db, "LEDGER_RETENTION_DAYS": "7"}
    )

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "LEDGER_RETENTION_DAYS: expected a whole number of days >= 35, got '7'" in err


def test_a_bad_retention_setting_does_not_stop_migrations(
    migrated_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = migrate_main(
        ["apply"], environ={"DATABASE_URL": migrated_db, "LEDGER_RETENTION_DAYS": "7"}
    )

    assert code == 0
    assert "nothing to apply" in capsys.readouterr().out
