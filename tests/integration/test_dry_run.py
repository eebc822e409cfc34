"""The dry-run Lambda end to end against a real PostgreSQL (and moto for Secrets Manager)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict

from devtools.lambda_context import LocalLambdaContext
from dry_run import bootstrap, handler
from dry_run.service import run_dry_run
from tests.support import FIXTURES, insert_leads, insert_tenant

pytestmark = pytest.mark.integration

# Wednesday 25 Nov 2026, 12:00 in São Paulo.
NOON = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
EVENTS = FIXTURES / "events"


@pytest.fixture
def db(migrated_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated database that the handler reaches through DATABASE_URL."""
    monkeypatch.setenv("DATABASE_URL", migrated_db)
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)
    monkeypatch.delenv("MICRO_AGENT_DISPARO_ENABLED", raising=False)
    handler.reset()
    # Metrics added by handle() outside lambda_handler are flushed by the next lambda_handler.
    handler.metrics.clear_metrics()
    yield migrated_db
    handler.reset()


def invoke(
    event: Any,
    *,
    now: datetime = NOON,
    environ: dict[str, str] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Invoke as a warm container would (cached dependencies), or with a one-off environment."""
    context = LocalLambdaContext(aws_request_id=request_id) if request_id else LocalLambdaContext()
    if environ is None:
        return handler.handle(event, context, deps=handler.dependencies(), clock=lambda: now)
    deps = bootstrap.build(environ)
    try:
        return handler.handle(event, context, deps=deps, clock=lambda: now)
    finally:
        deps.close()


def scalar(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    return None if row is None else row[0]


def ledger_rows(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM dry_run_log"))


def seed(url: str, count: int = 10, **lead_columns: Any) -> list[str]:
    with psycopg.connect(url) as conn:
        if scalar(url, "SELECT count(*) FROM tenants WHERE id = 'test-001'") == 0:
            insert_tenant(conn, "test-001")
        return insert_leads(conn, "test-001", count, **lead_columns)


def emf_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" in line]


def metric_total(text: str, name: str) -> float:
    total = 0.0
    for line in emf_lines(text):
        value = line.get(name, 0)
        total += sum(value) if isinstance(value, list) else float(value)
    return total


# --- the happy path and the response ---------------------------------------------------------


def test_a_run_decides_records_and_answers_in_the_contract_shape(db: str) -> None:
    lead_ids = seed(db, 3)

    response = invoke({"tenantId": "test-001", "batchSize": 50, "runId": "run-1"})

    assert set(response) == {"runId", "tenantId", "dryRun", "decisions", "summary"}
    assert (response["runId"], response["tenantId"], response["dryRun"]) == (
        "run-1",
        "test-001",
        True,
    )
    assert [d["leadId"] for d in response["decisions"]] == lead_ids
    first = response["decisions"][0]
    assert (first["channel"], first["action"], first["reason"], first["template"]) == (
        "whatsapp",
        "would_send",
        "whatsapp_template",
        "first_touch_v1",
    )
    assert len(first["dispatchKey"]) == 64
    assert response["summary"]["would_send"] == 3
    assert response["summary"]["byChannel"] == {"whatsapp": 3, "email": 0, "calendar": 0}
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT run_id, lead_id::text, channel, action, reason, template, flag_enabled, "
            "details, decided_at FROM dry_run_log ORDER BY id"
        ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("run-1", lead_id, "whatsapp", "would_send") for lead_id in lead_ids
    ]
    assert all(r[6] is False for r in rows)
    assert rows[0][7] == [{"channel": "calendar", "reason": "not_meeting_requested"}]
    assert rows[0][8] == NOON


def test_dry_runs_never_touch_the_live_dispatches_ledger(db: str) -> None:
    (lead_id,) = seed(db, 1)
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO dispatches (tenant_id, lead_id, channel, dispatch_key, status, "
            "created_at) VALUES ('test-001', %s, 'whatsapp', 'live-key', 'sent', %s)",
            (lead_id, NOON - timedelta(hours=1)),
        )

    response = invoke({"tenantId": "test-001", "batchSize": 5})

    assert response["decisions"][0]["action"] == "would_send"
    assert scalar(db, "SELECT count(*) FROM dispatches") == 1


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "error_type", "field"),
    [
        ("missing_tenant.json", "InvalidEvent", "tenantId"),
        ("empty_tenant.json", "InvalidEvent", "tenantId"),
        ("batch_zero.json", "InvalidEvent", "batchSize"),
        ("batch_negative.json", "InvalidEvent", "batchSize"),
        ("batch_too_big.json", "InvalidEvent", "batchSize"),
        ("batch_float.json", "InvalidEvent", "batchSize"),
        ("batch_string.json", "InvalidEvent", "batchSize"),
        ("extra_field.json", "InvalidEvent", "dryRun"),
        ("not_an_object.json", "InvalidEvent", "event"),
        ("unknown_tenant.json", "UnknownTenant", "tenantId"),
    ],
)
def test_every_bad_input_answers_an_error_and_writes_nothing(
    db: str, capsys: pytest.CaptureFixture[str], fixture: str, error_type: str, field: str
) -> None:
    seed(db, 5)
    event = json.loads((EVENTS / fixture).read_text())

    response = handler.lambda_handler(event, LocalLambdaContext())

    assert set(response) == {"error"}
    assert response["error"]["type"] == error_type
    assert response["error"]["message"].startswith(f"{field}: ")
    assert ledger_rows(db) == 0
    assert metric_total(capsys.readouterr().out, "RejectedEvents") == 1


def test_a_run_id_reused_for_another_tenant_is_rejected(db: str) -> None:
    seed(db, 2)
    with psycopg.connect(db) as conn:
        insert_tenant(conn, "other")
    invoke({"tenantId": "test-001", "batchSize": 5, "runId": "shared"})

    response = invoke({"tenantId": "other", "batchSize": 5, "runId": "shared"})

    assert response["error"]["type"] == "RunIdConflict"
    assert ledger_rows(db) == 2


# --- idempotency and "due" -------------------------------------------------------------------


def test_a_replayed_run_id_returns_the_same_decisions_and_writes_nothing_new(db: str) -> None:
    seed(db, 4)
    seed(db, 2, whatsapp_opt_in=False, email_opt_in=False)
    first = invoke({"tenantId": "test-001", "batchSize": 50, "runId": "r-1"})
    rows = ledger_rows(db)

    again = invoke(
        {"tenantId": "test-001", "batchSize": 50, "runId": "r-1"}, now=NOON + timedelta(hours=2)
    )

    assert again == first
    assert ledger_rows(db) == rows == 6


def test_a_retried_event_keeps_its_request_id_and_never_doubles_rows(db: str) -> None:
    seed(db, 3)
    first = invoke({"tenantId": "test-001", "batchSize": 10}, request_id="req-42")

    retry = invoke({"tenantId": "test-001", "batchSize": 10}, request_id="req-42")

    assert retry == first
    assert first["runId"] == "req-42"
    assert ledger_rows(db) == 3


def test_a_lead_intended_today_is_not_decided_again_by_a_later_run(db: str) -> None:
    seed(db, 3)
    invoke({"tenantId": "test-001", "batchSize": 10})

    later = invoke({"tenantId": "test-001", "batchSize": 10}, now=NOON + timedelta(hours=1))
    after_cooldown = invoke(
        {"tenantId": "test-001", "batchSize": 10}, now=NOON + timedelta(hours=73)
    )

    assert later["decisions"] == []
    assert len(after_cooldown["decisions"]) == 3
    assert {d["action"] for d in after_cooldown["decisions"]} == {"would_send"}


def test_unreachable_leads_skipped_once_do_not_starve_the_batch(db: str) -> None:
    unreachable = seed(db, 5, whatsapp_opt_in=False, email_opt_in=False)
    reachable = seed(db, 5)

    first = invoke({"tenantId": "test-001", "batchSize": 5})
    second = invoke({"tenantId": "test-001", "batchSize": 5}, now=NOON + timedelta(minutes=5))

    assert [d["leadId"] for d in first["decisions"]] == unreachable
    assert {d["reason"] for d in first["decisions"]} == {"no_eligible_channel"}
    assert [d["leadId"] for d in second["decisions"]] == reachable


def test_a_deferred_lead_comes_back_once_its_not_before_passes(db: str) -> None:
    (lead_id,) = seed(db, 1)
    late = datetime(2026, 11, 26, 1, 30, tzinfo=UTC)  # 22:30 in São Paulo

    deferred = invoke({"tenantId": "test-001", "batchSize": 5}, now=late)
    too_early = invoke({"tenantId": "test-001", "batchSize": 5}, now=late + timedelta(hours=2))
    opened = invoke(
        {"tenantId": "test-001", "batchSize": 5}, now=datetime(2026, 11, 26, 12, 5, tzinfo=UTC)
    )

    assert deferred["decisions"][0]["reason"] == "quiet_hours"
    assert deferred["decisions"][0]["notBefore"] == "2026-11-26T12:00:00+00:00"
    assert too_early["decisions"] == []
    assert [(d["leadId"], d["action"]) for d in opened["decisions"]] == [(lead_id, "would_send")]


# --- concurrency and caps --------------------------------------------------------------------


def test_eight_concurrent_invocations_decide_each_lead_at_most_once(db: str) -> None:
    with psycopg.connect(db) as conn:
        insert_tenant(conn, "test-001", limits={"whatsapp": (30, 500)})
        insert_leads(conn, "test-001", 100)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            with psycopg.connect(db, autocommit=True) as conn:
                barrier.wait()
                run_dry_run(
                    conn,
                    tenant_id="test-001",
                    batch_size=20,
                    run_id=f"c-{index}",
                    clock=lambda: NOON,
                )
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert (
        scalar(db, "SELECT max(n) FROM (SELECT count(*) n FROM dry_run_log GROUP BY lead_id) x")
        == 1
    )
    assert ledger_rows(db) == 100
    assert scalar(db, "SELECT count(*) FROM dry_run_log WHERE action = 'would_send'") == 30


def test_caps_hold_across_invocations(db: str) -> None:
    with psycopg.connect(db) as conn:
        insert_tenant(conn, "test-001", limits={"whatsapp": (5, 8)})
        insert_leads(conn, "test-001", 12)

    first = invoke({"tenantId": "test-001", "batchSize": 4})
    second = invoke({"tenantId": "test-001", "batchSize": 4}, now=NOON + timedelta(minutes=10))
    next_hour = invoke({"tenantId": "test-001", "batchSize": 4}, now=NOON + timedelta(minutes=61))

    assert [d["action"] for d in first["decisions"]] == ["would_send"] * 4
    assert [d["action"] for d in second["decisions"]] == ["would_send"] + ["deferred"] * 3
    assert second["decisions"][1]["notBefore"] == (NOON + timedelta(hours=1)).isoformat()
    # A new hour frees the hourly cap; the daily cap (8) then stops it at 3 more.
    assert [d["action"] for d in next_hour["decisions"]] == ["would_send"] * 3 + ["deferred"]


# --- the flag --------------------------------------------------------------------------------


def test_flag_on_with_a_dry_run_tenant_is_shadow_mode(db: str) -> None:
    import os

    # GIVEN the flag exactly "true" and a tenant still in dispatch_mode dry_run
    seed(db, 3)

    # WHEN it runs
    response = invoke(
        {"tenantId": "test-001", "batchSize": 5},
        environ={**os.environ, "MICRO_AGENT_DISPARO_ENABLED": "true"},
    )

    # THEN it rehearses: a dry run whose rows say the flag was on, and nothing live
    assert response["dryRun"] is True
    assert ledger_rows(db) == 3
    assert scalar(db, "SELECT count(*) FROM dry_run_log WHERE flag_enabled") == 3
    assert scalar(db, "SELECT count(*) FROM dispatches") == 0
    assert scalar(db, "SELECT count(*) FROM live_log") == 0


@pytest.mark.parametrize("value", ["TRUE", " true", "1", "yes"])
def test_near_miss_flag_values_are_dry_runs(db: str, value: str) -> None:
    import os

    seed(db, 1)

    response = invoke(
        {"tenantId": "test-001", "batchSize": 5},
        environ={**os.environ, "MICRO_AGENT_DISPARO_ENABLED": value},
    )

    assert response["dryRun"] is True
    assert ledger_rows(db) == 1


# --- faults ----------------------------------------------------------------------------------


def test_database_down_raises_and_counts_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://agent@127.0.0.1:1/leads")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_S", "2")
    handler.reset()
    try:
        with pytest.raises(psycopg.OperationalError):
            handler.lambda_handler({"tenantId": "test-001", "batchSize": 5}, LocalLambdaContext())
    finally:
        handler.reset()
    assert metric_total(capsys.readouterr().out, "Errors") == 1


def test_a_statement_timeout_midway_commits_nothing(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(db, 5)
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_MS", "300")
    handler.reset()
    # Another session blocks writes to the ledger, so the run reads and decides, then its COPY
    # waits past the statement timeout.
    with psycopg.connect(db) as blocker:
        blocker.execute("LOCK TABLE dry_run_log IN SHARE MODE")
        with pytest.raises(psycopg.errors.QueryCanceled):
            invoke({"tenantId": "test-001", "batchSize": 5})
        blocker.rollback()

    assert ledger_rows(db) == 0
    monkeypatch.delenv("DB_STATEMENT_TIMEOUT_MS")
    handler.reset()
    assert len(invoke({"tenantId": "test-001", "batchSize": 5})["decisions"]) == 5


def test_the_connection_is_reused_and_reopened_once_if_the_server_dropped_it(db: str) -> None:
    seed(db, 4)
    invoke({"tenantId": "test-001", "batchSize": 1})
    pid_query = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'micro-agent-dry-run' "
        "AND datname = current_database()"
    )
    first_pid = scalar(db, pid_query)
    invoke({"tenantId": "test-001", "batchSize": 1})
    assert scalar(db, pid_query) == first_pid, "a warm invocation must reuse the connection"

    scalar(db, "SELECT pg_terminate_backend(%s)", (first_pid,))
    response = invoke({"tenantId": "test-001", "batchSize": 1})

    assert len(response["decisions"]) == 1
    assert scalar(db, pid_query) not in (None, first_pid)
    assert ledger_rows(db) == 3


@pytest.mark.usefixtures("aws_env")
def test_the_secret_path_works_and_is_fetched_once_per_container(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(db, 2)
    params = conninfo_to_dict(db)
    secret = {
        "host": params["host"],
        "port": 5432,
        "username": params["user"],
        "password": params.get("password") or "",
        "dbname": params["dbname"],
    }
    with mock_aws():
        client = boto3.client("secretsmanager")
        arn = client.create_secret(Name="db", SecretString=json.dumps(secret))["ARN"]
        monkeypatch.delenv("DATABASE_URL")
        monkeypatch.setenv("DB_SECRET_ARN", arn)
        handler.reset()

        first = invoke({"tenantId": "test-001", "batchSize": 1})
        client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        second = invoke({"tenantId": "test-001", "batchSize": 1}, now=NOON + timedelta(minutes=1))

    assert len(first["decisions"]) == len(second["decisions"]) == 1
    assert ledger_rows(db) == 2


# --- observability ---------------------------------------------------------------------------


def test_log_lines_are_structured_and_mask_contacts(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(db, 2, phone="+5511987654321", email="ana.souza@example.com", whatsapp_opt_in=False)
    stream = io.StringIO()
    original = handler.logger.registered_handler.stream  # type: ignore[attr-defined]
    handler.logger.registered_handler.setStream(stream)  # type: ignore[attr-defined]
    try:
        response = handler.lambda_handler(
            {"tenantId": "test-001", "batchSize": 5, "runId": "log-run"}, LocalLambdaContext()
        )
    finally:
        handler.logger.registered_handler.setStream(original)  # type: ignore[attr-defined]

    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    decisions = [line for line in lines if line["message"] == "decision"]
    assert len(decisions) == len(response["decisions"]) == 2
    assert all(line["tenantId"] == "test-001" and line["runId"] == "log-run" for line in lines)
    assert all(line["service"] for line in lines)
    assert "cold_start" in decisions[0]
    assert decisions[0]["to"] == "a***@example.com"
    assert [line["message"] for line in lines].count("summary") == 1
    assert "ana.souza@example.com" not in text
    assert "987654321" not in text
    metrics_out = capsys.readouterr().out
    assert metric_total(metrics_out, "Decisions") == 2
