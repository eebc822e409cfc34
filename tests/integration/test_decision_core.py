"""The decision core under real use: overlapping runs with their own clocks, large tenants,
deferrals, shared runIds, other services writing leads, a rotated secret, least privilege.

Every test runs against a real PostgreSQL; concurrency is real processes or threads.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devtools.lambda_context import LocalLambdaContext
from dry_run import bootstrap, handler, leads
from dry_run.exceptions import RunIdConflictError
from dry_run.service import run_dry_run
from dry_run.settings import DATABASE_ROLE
from tests.support import insert_leads, insert_tenant, run_handler_with_own_clock

pytestmark = pytest.mark.integration

# Wednesday 25 Nov 2026, 12:00 in São Paulo.
NOON = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def scalar(url: str, query: str, params: Any = ()) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    return None if row is None else row[0]


def invoke(url: str, event: dict[str, Any], now: datetime = NOON) -> dict[str, Any]:
    deps = bootstrap.build({"DATABASE_URL": url})
    try:
        return handler.handle(event, LocalLambdaContext(), deps=deps, clock=lambda: now)
    finally:
        deps.close()
        handler.metrics.clear_metrics()  # lambda_handler would have flushed them


def bulk_leads(url: str, tenant_id: str, count: int, *, email_only: bool = False) -> None:
    """Insert ``count`` leads in one statement, as a CRM import would (oldest first)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO leads (tenant_id, full_name, phone, email, whatsapp_opt_in, "
            "email_opt_in, created_at) "
            "SELECT %s, 'Lead ' || i, '+5511987654321', 'lead' || i || '@example.com', %s, true, "
            "timestamptz '2026-01-01 00:00Z' + make_interval(secs => i) "
            "FROM generate_series(1, %s) AS i",
            (tenant_id, not email_only, count),
        )


@pytest.fixture(scope="module")
def process_pool() -> Iterator[ProcessPoolExecutor]:
    """Eight worker processes (spawned: each imports the function like a new container)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=8, mp_context=context) as pool:
        yield pool


@pytest.fixture(scope="module")
def manager() -> Iterator[Any]:
    with multiprocessing.get_context("spawn").Manager() as shared:
        yield shared


# --- 1. caps hold when runs with their own clocks overlap -------------------------------------


@pytest.mark.parametrize("trial", range(4))
def test_overlapping_runs_with_their_own_clocks_never_exceed_a_cap(
    migrated_db: str, process_pool: ProcessPoolExecutor, manager: Any, trial: int
) -> None:
    # GIVEN a tenant capped at 30 emails an hour and 100 leads reachable only by email
    tenant = f"cap-{trial}"
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, tenant, limits={"email": (30, 500)})
    bulk_leads(migrated_db, tenant, 100, email_only=True)
    # WHEN 8 processes, whose clocks disagree by up to 13 minutes, run at the same instant
    offsets = [-420.0, -300.0, -180.0, -60.0, 0.0, 120.0, 240.0, 360.0]
    random.Random(trial).shuffle(offsets)
    barrier = manager.Barrier(8)
    futures = [
        process_pool.submit(
            run_handler_with_own_clock,
            migrated_db,
            {"tenantId": tenant, "batchSize": 20, "runId": f"{tenant}-{index}"},
            NOON,
            offset,
            barrier,
        )
        for index, offset in enumerate(offsets)
    ]
    responses = [future.result(timeout=120) for future in futures]

    # THEN every run succeeded, no lead was decided twice, and exactly the cap was intended
    assert all("error" not in response for response in responses)
    decided = [d["leadId"] for response in responses for d in response["decisions"]]
    assert len(decided) == len(set(decided)) == 100
    sends = scalar(
        migrated_db,
        "SELECT count(*) FROM dry_run_log WHERE tenant_id = %s AND action = 'would_send'",
        (tenant,),
    )
    assert sends == 30


# --- 2. overlapping runs skip each other's leads instead of queueing --------------------------


def test_eight_overlapping_runs_on_a_large_tenant_all_succeed_on_distinct_leads(
    migrated_db: str,
) -> None:
    # GIVEN a 60,000-lead tenant with 20,000 leads already decided within the cooldown
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "big", limits={"whatsapp": (100_000, 100_000)})
    bulk_leads(migrated_db, "big", 60_000)
    for index in range(20):
        response = invoke(
            migrated_db,
            {"tenantId": "big", "batchSize": 1000, "runId": f"history-{index}"},
            now=NOON - timedelta(hours=1),
        )
        assert len(response["decisions"]) == 1000
    # and statements that give up after 3 s, as a loaded production database would
    environ = {"DATABASE_URL": migrated_db, "DB_STATEMENT_TIMEOUT_MS": "3000"}
    barrier = threading.Barrier(8)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run(index: int) -> None:
        deps = bootstrap.build(environ)
        try:
            deps.connections.run(lambda conn: conn.execute("SELECT 1"))
            barrier.wait(timeout=60)
            results.append(
                handler.handle(
                    {"tenantId": "big", "batchSize": 1000, "runId": f"overlap-{index}"},
                    LocalLambdaContext(),
                    deps=deps,
                    clock=lambda: NOON,
                )
            )
        except BaseException as exc:  # surfaced by the assertions below
            errors.append(exc)
        finally:
            deps.close()

    # WHEN 8 runs of 1,000 leads start at once
    threads = [threading.Thread(target=run, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # THEN all succeed and decide 8,000 distinct leads none of the history's
    assert errors == []
    decided = [d["leadId"] for response in results for d in response["decisions"]]
    assert len(decided) == len(set(decided)) == 8000
    repeated = scalar(
        migrated_db,
        "SELECT count(*) FROM (SELECT lead_id FROM dry_run_log GROUP BY lead_id "
        "HAVING count(*) > 1) x",
    )
    assert repeated == 0


def test_a_run_takes_the_next_leads_while_another_run_holds_the_first(migrated_db: str) -> None:
    # GIVEN 10 leads, the 4 oldest locked by an overlapping run still deciding
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
        ids = insert_leads(conn, "t-1", 10)
    with psycopg.connect(migrated_db) as other:
        held = leads.pick_due_leads(other, "t-1", "dry_run", 4)
        assert [item.lead.id for item in held] == ids[:4]

        # WHEN a run starts meanwhile (it would time out if it waited for those rows)
        environ = {"DATABASE_URL": migrated_db, "DB_LOCK_TIMEOUT_MS": "500"}
        deps = bootstrap.build(environ)
        try:
            response = handler.handle(
                {"tenantId": "t-1", "batchSize": 10},
                LocalLambdaContext(),
                deps=deps,
                clock=lambda: NOON,
            )
        finally:
            deps.close()
        other.rollback()

    # THEN it decided the other 6, oldest first, without waiting
    assert [d["leadId"] for d in response["decisions"]] == ids[4:]


# --- 3. finding due leads costs the batch, not the history ------------------------------------


def test_the_due_leads_query_reads_about_the_batch_whatever_the_history(migrated_db: str) -> None:
    # GIVEN 12,000 leads of which the 10,000 oldest were decided within the cooldown
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1", limits={"whatsapp": (100_000, 100_000)})
    bulk_leads(migrated_db, "t-1", 12_000)
    for index in range(10):
        invoke(migrated_db, {"tenantId": "t-1", "batchSize": 1000, "runId": f"h-{index}"})
    with psycopg.connect(migrated_db) as conn:
        conn.execute("ANALYZE lead_due")
        # WHEN the next 100 are picked, under EXPLAIN ANALYZE
        plan = conn.execute(
            ("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + leads._PICK).encode(),
            {"tenant": "t-1", "mode": "dry_run", "limit": 100, "taken": []},
        ).fetchone()[0][0]  # type: ignore[index]
        conn.rollback()

    # THEN no node of the plan handled more than a few batches' worth of rows
    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    rows = [node["Actual Rows"] * node.get("Actual Loops", 1) for node in nodes(plan["Plan"])]
    assert max(rows) <= 300, json.dumps(plan)[:2000]
    assert any(node.get("Index Name") == "lead_due_ready_idx" for node in nodes(plan["Plan"]))


# --- 4. deferred leads do not starve the batch ------------------------------------------------


def test_deferred_leads_wait_for_not_before_even_with_no_cooldown(migrated_db: str) -> None:
    # GIVEN a tenant with no cooldown, 20 old WhatsApp leads and 5 newer email-only leads
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1", cooldown_hours=0)
        whatsapp = insert_leads(conn, "t-1", 20, email_opt_in=False)
        email = insert_leads(conn, "t-1", 5, whatsapp_opt_in=False)
    night = datetime(2026, 11, 26, 1, 30, tzinfo=UTC)  # 22:30 in São Paulo

    # WHEN runs of 20 go every hour through the night
    runs = [
        invoke(migrated_db, {"tenantId": "t-1", "batchSize": 20}, now=night + timedelta(hours=h))
        for h in range(10)
    ]

    # THEN the first run defers the WhatsApp leads to 09:00, the second reaches the email
    # leads, and the deferred leads are not decided again before 09:00
    assert [d["leadId"] for d in runs[0]["decisions"]] == whatsapp
    assert {d["reason"] for d in runs[0]["decisions"]} == {"quiet_hours"}
    assert [d["leadId"] for d in runs[1]["decisions"]] == email
    assert {d["action"] for d in runs[1]["decisions"]} == {"would_send"}
    later = [d["leadId"] for run in runs[2:] for d in run["decisions"]]
    assert not set(later) & set(whatsapp)
    morning = invoke(
        migrated_db,
        {"tenantId": "t-1", "batchSize": 20},
        now=datetime(2026, 11, 26, 12, 1, tzinfo=UTC),
    )
    assert [d["leadId"] for d in morning["decisions"]] == whatsapp


# --- 5. a runId belongs to one tenant --------------------------------------------------------


@pytest.mark.parametrize("trial", range(10))
def test_one_run_id_for_two_tenants_at_the_same_instant(migrated_db: str, trial: int) -> None:
    # GIVEN two tenants with leads
    with psycopg.connect(migrated_db) as conn:
        for tenant in ("a", "b"):
            if scalar(migrated_db, "SELECT count(*) FROM tenants WHERE id = %s", (tenant,)) == 0:
                insert_tenant(conn, tenant)
            insert_leads(conn, tenant, 3)
    run_id = f"shared-{trial}"
    barrier = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def run(tenant: str) -> None:
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            barrier.wait(timeout=30)
            try:
                outcomes[tenant] = run_dry_run(
                    conn, tenant_id=tenant, batch_size=10, run_id=run_id, clock=lambda: NOON
                )
            except RunIdConflictError as exc:
                outcomes[tenant] = exc

    # WHEN both start a run with the same runId at the same instant
    threads = [threading.Thread(target=run, args=(tenant,)) for tenant in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # THEN exactly one owns it; the other is refused and wrote nothing
    conflicts = [t for t, outcome in outcomes.items() if isinstance(outcome, RunIdConflictError)]
    assert len(conflicts) == 1
    (winner,) = {"a", "b"} - set(conflicts)
    assert scalar(migrated_db, "SELECT tenant_id FROM runs WHERE run_id = %s", (run_id,)) == winner
    assert (
        scalar(
            migrated_db,
            "SELECT count(DISTINCT tenant_id) FROM dry_run_log WHERE run_id = %s",
            (run_id,),
        )
        == 1
    )
    # and a replay for the winner returns only its own leads; for the loser, a conflict
    replay = invoke(migrated_db, {"tenantId": winner, "batchSize": 10, "runId": run_id})
    owned = scalar(
        migrated_db,
        "SELECT array_agg(id::text) FROM leads WHERE tenant_id = %s",
        (winner,),
    )
    assert {d["leadId"] for d in replay["decisions"]} <= set(owned)
    loser = invoke(migrated_db, {"tenantId": conflicts[0], "batchSize": 10, "runId": run_id})
    assert loser["error"]["type"] == "RunIdConflict"


# --- 6. leads written by other services with plain SQL ---------------------------------------


def test_leads_inserted_and_updated_by_another_service_are_picked_up(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
    platform = migrated_db  # another service: plain SQL, no knowledge of the agent's tables

    # GIVEN a lead inserted with plain SQL without consent: decided once, then left alone
    with psycopg.connect(platform) as conn:
        lead = conn.execute(
            "INSERT INTO leads (tenant_id, full_name, phone, email) "
            "VALUES ('t-1', 'Ana', '+5511987654321', 'ana@example.com') RETURNING id::text"
        ).fetchone()[0]  # type: ignore[index]
    first = invoke(migrated_db, {"tenantId": "t-1", "batchSize": 10})
    assert [(d["leadId"], d["reason"]) for d in first["decisions"]] == [
        (lead, "no_eligible_channel")
    ]
    assert (
        invoke(migrated_db, {"tenantId": "t-1", "batchSize": 10}, NOON + timedelta(hours=1))[
            "decisions"
        ]
        == []
    )

    # WHEN the platform records her consent, THEN the next run examines her again and intends
    with psycopg.connect(platform) as conn:
        conn.execute("UPDATE leads SET email_opt_in = true WHERE id = %s", (lead,))
    consented = invoke(migrated_db, {"tenantId": "t-1", "batchSize": 10}, NOON + timedelta(hours=2))
    assert [(d["leadId"], d["action"], d["channel"]) for d in consented["decisions"]] == [
        (lead, "would_send", "email")
    ]

    # WHEN an unrelated column changes, THEN she is not examined again within the cooldown
    with psycopg.connect(platform) as conn:
        conn.execute("UPDATE leads SET full_name = 'Ana S.' WHERE id = %s", (lead,))
    assert (
        invoke(migrated_db, {"tenantId": "t-1", "batchSize": 10}, NOON + timedelta(hours=3))[
            "decisions"
        ]
        == []
    )

    # WHEN she opts out (or becomes a customer), THEN no run takes her, even after the cooldown
    with psycopg.connect(platform) as conn:
        conn.execute("UPDATE leads SET opted_out_at = %s WHERE id = %s", (NOON, lead))
    for hours in (4, 80, 200):
        response = invoke(
            migrated_db, {"tenantId": "t-1", "batchSize": 10}, NOON + timedelta(hours=hours)
        )
        assert response["decisions"] == []

    # WHEN the platform deletes her (LGPD erasure), THEN her due state and verdicts go too
    with psycopg.connect(platform) as conn:
        conn.execute("DELETE FROM leads WHERE id = %s", (lead,))
    assert scalar(migrated_db, "SELECT count(*) FROM lead_due WHERE lead_id = %s", (lead,)) == 0
    assert (
        scalar(
            migrated_db, "SELECT count(*) FROM lead_contact_verdicts WHERE lead_id = %s", (lead,)
        )
        == 0
    )


def test_a_lead_that_leaves_an_excluded_stage_is_due_again(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
        (lost,) = insert_leads(conn, "t-1", 1, stage="lost")
        fresh = insert_leads(conn, "t-1", 2)

    first = invoke(migrated_db, {"tenantId": "t-1", "batchSize": 10})
    with psycopg.connect(migrated_db) as conn:
        conn.execute("UPDATE leads SET stage = 'nurturing' WHERE id = %s", (lost,))
    second = invoke(migrated_db, {"tenantId": "t-1", "batchSize": 10}, NOON + timedelta(hours=1))

    assert [d["leadId"] for d in first["decisions"]] == fresh
    assert [(d["leadId"], d["template"]) for d in second["decisions"]] == [
        (lost, "nurture_follow_up_v1")
    ]


# --- 7. least privilege in the database -------------------------------------------------------


@pytest.fixture
def function_role_url(migrated_db: str) -> str:
    """The migrated database, reached as the dry-run function's own role."""
    password = uuid.uuid4().hex
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        # Password auth where the server asks for it; the embedded server trusts local users.
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(DATABASE_ROLE), sql.Literal(password)
            )
        )
    return make_conninfo(migrated_db, user=DATABASE_ROLE, password=password)


def test_the_function_runs_as_its_own_role(migrated_db: str, function_role_url: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
        insert_leads(conn, "t-1", 3, whatsapp_opt_in=False)

    response = invoke(function_role_url, {"tenantId": "t-1", "batchSize": 10, "runId": "r-1"})
    replay = invoke(function_role_url, {"tenantId": "t-1", "batchSize": 10, "runId": "r-1"})

    assert [d["action"] for d in response["decisions"]] == ["would_send"] * 3
    assert replay == response
    assert scalar(function_role_url, "SELECT current_user") == DATABASE_ROLE


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE dry_run_log",
        "DELETE FROM dry_run_log",
        "TRUNCATE dry_run_log",
        "UPDATE dry_run_log SET reason = 'x'",
        "DELETE FROM runs",
        "UPDATE leads SET stage = 'lost'",
        "INSERT INTO tenants (id, name) VALUES ('evil', 'Evil')",
        "UPDATE lead_due SET tenant_id = 'x'",
        "CREATE TABLE scratch (x int)",
        # Live mode: it claims and records sends, but never rewrites whose send it is, its
        # history, a tenant's mode, its senders, message content or an opt-out.
        "UPDATE dispatches SET tenant_id = 'x'",
        "UPDATE dispatches SET dispatch_key = 'x'",
        "DELETE FROM live_log",
        "UPDATE live_log SET reason = 'x'",
        "UPDATE tenants SET dispatch_mode = 'live'",
        "INSERT INTO tenant_senders (tenant_id, channel, sender) VALUES ('t', 'email', 'a@b.c')",
        "UPDATE tenant_senders SET secret_arn = 'x'",
        "UPDATE message_templates SET body = 'x'",
        "DELETE FROM opt_outs",
        "DELETE FROM meetings",
    ],
)
def test_the_function_role_cannot_change_what_it_must_not(
    function_role_url: str, statement: str
) -> None:
    with (
        psycopg.connect(function_role_url) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement.encode())


# --- 8. connections that survive a rotated secret --------------------------------------------


@pytest.fixture
def password_role(migrated_db: str, pg_admin_url: str) -> Iterator[tuple[str, str]]:
    """A login role that must present its password (a scram line in pg_hba for it alone)."""
    role = f"rotating_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        hba_file = conn.execute("SHOW hba_file").fetchone()[0]  # type: ignore[index]
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(role), sql.Literal(password), sql.Identifier(DATABASE_ROLE)
            )
        )
        try:
            with open(hba_file, encoding="utf-8") as handle:
                original = handle.read()
        except OSError:
            pytest.skip(f"cannot edit {hba_file} on this server to require a password")
        rule = f"local all {role} scram-sha-256\nhost all {role} 127.0.0.1/32 scram-sha-256\n"
        with open(hba_file, "w", encoding="utf-8") as handle:
            handle.write(rule + original)
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield role, password
    finally:
        with open(hba_file, "w", encoding="utf-8") as handle:
            handle.write(original)
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.usefixtures("aws_env")
def test_a_warm_container_recovers_from_a_rotated_secret(
    migrated_db: str, password_role: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    role, password = password_role
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
        insert_leads(conn, "t-1", 3)
    params = conninfo_to_dict(migrated_db)
    secret = {
        "host": params["host"],
        "port": int(params.get("port") or 5432),
        "username": role,
        "password": password,
        "dbname": params["dbname"],
    }
    # The embedded server listens on a socket: TLS is for Aurora, not for this test's server.
    monkeypatch.setattr("pgconn._verified_tls", lambda: {})
    with mock_aws():
        client = boto3.client("secretsmanager")
        arn = client.create_secret(Name="db/dry-run", SecretString=json.dumps(secret))["ARN"]
        deps = bootstrap.build({"DB_SECRET_ARN": arn, "AWS_REGION": "us-east-1"})
        try:
            # GIVEN a warm container connected with the secret's password
            first = handler.handle(
                {"tenantId": "t-1", "batchSize": 1},
                LocalLambdaContext(),
                deps=deps,
                clock=lambda: NOON,
            )
            # WHEN the password rotates (role and secret) and the server drops the connection
            rotated = uuid.uuid4().hex
            with psycopg.connect(migrated_db, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(rotated)
                    )
                )
                client.put_secret_value(
                    SecretId=arn, SecretString=json.dumps({**secret, "password": rotated})
                )
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (role,),
                )
            # THEN its next invocation reconnects with the new password and succeeds
            second = handler.handle(
                {"tenantId": "t-1", "batchSize": 1},
                LocalLambdaContext(),
                deps=deps,
                clock=lambda: NOON + timedelta(minutes=1),
            )
        finally:
            deps.close()

    assert len(first["decisions"]) == len(second["decisions"]) == 1
    assert first["decisions"][0]["leadId"] != second["decisions"][0]["leadId"]


def test_a_session_carries_its_timeouts_and_keepalives(migrated_db: str) -> None:
    deps = bootstrap.build({"DATABASE_URL": migrated_db, "DB_LOCK_TIMEOUT_MS": "1500"})
    try:
        settings = deps.connections.run(
            lambda conn: conn.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
                "current_setting('idle_in_transaction_session_timeout'), "
                "current_setting('TimeZone')"
            ).fetchone()
        )
        dsn = deps.connections.run(lambda conn: conn.info.dsn)
    finally:
        deps.close()

    assert settings == ("10s", "1500ms", "30s", "UTC")
    assert "keepalives=1" in dsn
    assert "keepalives_idle=30" in dsn


def test_suppressed_leads_are_parked_and_the_batch_is_filled_with_due_ones(
    migrated_db: str,
) -> None:
    # GIVEN the 6 oldest leads are opted out or customers, and 10 due leads come after them
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
        insert_leads(conn, "t-1", 3, opted_out_at=NOON - timedelta(days=3))
        insert_leads(conn, "t-1", 3, stage="customer")
        due = insert_leads(conn, "t-1", 10)

    # WHEN a run of 8 starts
    response = invoke(migrated_db, {"tenantId": "t-1", "batchSize": 8})

    # THEN it decides the 8 oldest due leads, records nothing for the suppressed ones and
    # parks them, so a later run takes the remaining due leads without meeting them again
    assert [d["leadId"] for d in response["decisions"]] == due[:8]
    assert scalar(migrated_db, "SELECT count(*) FROM dry_run_log") == 8
    parked = scalar(
        migrated_db, "SELECT count(*) FROM lead_due WHERE mode = 'dry_run' AND due_at = 'infinity'"
    )
    assert parked == 6
    later = invoke(migrated_db, {"tenantId": "t-1", "batchSize": 8}, NOON + timedelta(minutes=5))
    assert [d["leadId"] for d in later["decisions"]] == due[8:]


def test_a_run_takes_its_leads_while_another_run_decides(migrated_db: str) -> None:
    # GIVEN 30 leads and an overlapping run in its decide-and-record section (tenant lock held)
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
        insert_leads(conn, "t-1", 30)
    deciding = psycopg.connect(migrated_db)
    leads.lock_tenant(deciding, "t-1")
    result: dict[str, Any] = {}

    def run() -> None:
        result["response"] = invoke(migrated_db, {"tenantId": "t-1", "batchSize": 10})

    # WHEN another run starts meanwhile
    thread = threading.Thread(target=run)
    thread.start()
    try:
        # THEN once it waits for the tenant's short section, it has already taken (locked) its
        # 10 leads: a third run sees only the other 20. (Probing before it waits would lock
        # the rows under it, so the probe waits for the wait first.)
        for _ in range(400):
            waiting = scalar(
                migrated_db,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
            )
            if waiting or not thread.is_alive():
                break
            threading.Event().wait(0.025)
        with psycopg.connect(migrated_db) as probe:
            free = probe.execute(
                "SELECT count(*) FROM (SELECT 1 FROM lead_due WHERE tenant_id = 't-1' "
                "AND mode = 'dry_run' AND ready FOR UPDATE SKIP LOCKED) x"
            ).fetchone()[0]  # type: ignore[index]
        assert free == 20
        assert thread.is_alive(), "it waits for the tenant's decide section, as it must"
    finally:
        deciding.rollback()
        deciding.close()
        thread.join(timeout=30)
    assert len(result["response"]["decisions"]) == 10


def test_the_ledgers_copy_keeps_every_character_of_every_field(migrated_db: str) -> None:
    from dry_run import ledger
    from dry_run.policy import Decision, Rejection

    # GIVEN decisions whose text holds COPY's special characters, NULLs and a deferral
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
        first, second = insert_leads(conn, "t-1", 2)
    awkward = "tab\there\nnew line \\ back\\slash\r"
    decisions = [
        Decision(
            first,
            "skipped",
            awkward,
            local_date=NOON.date(),
            details=(Rejection("email", "no_consent"),),
        ),
        Decision(
            second,
            "deferred",
            "quiet_hours",
            "whatsapp",
            "first_touch_v1",
            not_before=NOON + timedelta(hours=3),
            local_date=NOON.date(),
        ),
    ]

    # WHEN they are recorded and read back
    with psycopg.connect(migrated_db) as conn:
        ledger.record(conn, "run\\1", "t-1", decisions, flag_enabled=False, decided_at=NOON)
        conn.commit()
        replayed = ledger.read_run(conn, "t-1", "run\\1")

    # THEN nothing changed on the way
    assert replayed == decisions


# --- caps from send counts --------------------------------------------------------------------


def test_the_caps_count_exactly_to_the_second_at_a_windows_edge(migrated_db: str) -> None:
    from dry_run import ledger

    # GIVEN email sends recorded at 12:00:30, 12:00:50 and 12:20:00 (São Paulo), one a lead
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
        insert_leads(conn, "t-1", 3, whatsapp_opt_in=False)
    sends = [
        NOON + timedelta(seconds=30),
        NOON + timedelta(seconds=50),
        NOON + timedelta(minutes=20),
    ]
    for index, moment in enumerate(sends):
        invoke(migrated_db, {"tenantId": "t-1", "batchSize": 1, "runId": f"s-{index}"}, moment)

    def usage_at(moment: datetime) -> tuple[int, datetime | None, int]:
        with psycopg.connect(migrated_db) as conn:
            email = ledger.channel_usage(conn, "t-1", moment)["email"]
        return email.hour_count, email.hour_oldest, email.day_count

    # WHEN the caps are read around the hour window's edge
    # THEN a send counts while it is inside the window, to the second, and the oldest in the
    # window is the one that leaves it next
    assert usage_at(NOON + timedelta(hours=1, seconds=10)) == (3, sends[0], 3)
    assert usage_at(NOON + timedelta(hours=1, seconds=40)) == (2, sends[1], 3)
    assert usage_at(NOON + timedelta(hours=1, seconds=55)) == (1, sends[2], 3)
    assert usage_at(NOON + timedelta(days=1, seconds=40)) == (0, None, 2)
    # and the counts agree with the ledger itself
    assert scalar(migrated_db, "SELECT sum(sends) FROM send_counts") == scalar(
        migrated_db, "SELECT count(*) FROM dry_run_log WHERE action = 'would_send'"
    )
