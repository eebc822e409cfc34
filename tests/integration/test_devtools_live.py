"""The live-mode developer tools on a real PostgreSQL: `nox -s tenant`, `nox -s demo-live`."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from devtools import demo_live, tenant
from tests.support import REPO_ROOT, insert_tenant

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NUMBER = "106540352242922"
ARN = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:micro-agent/dev/tenants/t-1-AbCdEf"


@pytest.fixture
def db(migrated_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated database with tenant t-1 (dry_run), as DATABASE_URL."""
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
    monkeypatch.setenv("DATABASE_URL", migrated_db)
    return migrated_db


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``nox -s tenant -- ARGV``'s exit code, stdout and stderr."""
    code: object
    try:
        code = tenant.main(list(argv))
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    assert isinstance(code, int)
    return code, captured.out, captured.err


def mode_of(url: str, tenant_id: str = "t-1") -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT dispatch_mode FROM tenants WHERE id = %s", (tenant_id,))
        return str(row.fetchone()[0])  # type: ignore[index]


# --- nox -s tenant ---------------------------------------------------------------------------


def test_mode_switches_a_tenant_live_and_says_what_else_live_needs(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "mode", "t-1", "live")

    assert (code, err) == (0, "")
    assert mode_of(db) == "live"
    lines = out.splitlines()
    assert lines[0] == "tenant t-1: dispatch_mode dry_run → live (changed)"
    assert 'MICRO_AGENT_DISPARO_ENABLED is exactly "true"' in lines[1]
    assert "sender_not_configured" in lines[2]


def test_mode_back_to_dry_run(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "mode", "t-1", "live")

    code, out, _ = cli(capsys, "mode", "t-1", "dry_run")

    assert code == 0
    assert mode_of(db) == "dry_run"
    assert out.splitlines()[0] == "tenant t-1: dispatch_mode live → dry_run (changed)"


def test_an_unknown_tenant_is_one_line_naming_the_field_and_changes_nothing(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "mode", "t-404", "live")

    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "tenant: tenantId: no tenant 't-404' in this database; expected an existing tenant id (t-1)"
    ]
    assert mode_of(db) == "dry_run"


def test_a_bad_mode_is_one_line_and_changes_nothing(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "mode", "t-1", "Live")

    assert (code, out) == (2, "")
    assert err == "tenant: dispatch_mode: expected dry_run or live (exactly), got 'Live'\n"
    assert mode_of(db) == "dry_run"


def test_sender_upserts_a_tenants_senders_and_show_lists_them(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "sender", "t-1", "whatsapp", NUMBER, "--secret-arn", ARN)[0] == 0
    assert cli(capsys, "sender", "t-1", "email", "old@acme.com.br")[0] == 0
    code, out, _ = cli(
        capsys, "sender", "t-1", "email", "vendas@acme.com.br", "--configuration-set", "acme"
    )

    assert code == 0
    assert out == (
        "tenant t-1 email sender: old@acme.com.br → vendas@acme.com.br, configuration set acme\n"
    )
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT channel, sender, secret_arn, configuration_set FROM tenant_senders "
            "ORDER BY channel"
        ).fetchall()
    assert rows == [
        ("email", "vendas@acme.com.br", None, "acme"),
        ("whatsapp", NUMBER, ARN, None),
    ]
    code, out, _ = cli(capsys, "show", "t-1")
    assert code == 0
    assert "dispatch_mode: dry_run" in out
    assert f"  whatsapp {NUMBER}, secret {ARN}" in out
    assert "  email    vendas@acme.com.br, configuration set acme" in out
    assert "paused channels: none" in out


def test_a_whatsapp_number_belongs_to_one_tenant(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(db) as conn:
        insert_tenant(conn, "t-2")
    cli(capsys, "sender", "t-1", "whatsapp", NUMBER, "--secret-arn", ARN)

    code, _, err = cli(capsys, "sender", "t-2", "whatsapp", NUMBER, "--secret-arn", ARN)

    assert code == 2
    assert err.startswith(f"tenant: sender: WhatsApp number {NUMBER} already belongs to tenant")


def test_resume_clears_a_paused_channel(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "sender", "t-1", "whatsapp", NUMBER, "--secret-arn", ARN)
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE tenant_senders SET paused_at = now(), paused_reason = '131048' "
            "WHERE channel = 'whatsapp'"
        )
    _, shown, _ = cli(capsys, "show", "t-1")
    assert "paused: whatsapp (131048); once fixed: nox -s tenant -- resume t-1 whatsapp" in shown

    code, out, _ = cli(capsys, "resume", "t-1", "whatsapp")

    assert code == 0
    assert out.startswith("tenant t-1: whatsapp resumed (it was paused since ")
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT paused_at, paused_reason FROM tenant_senders").fetchone()
    assert row == (None, None)
    assert cli(capsys, "resume", "t-1", "whatsapp")[1] == (
        "tenant t-1: whatsapp was not paused; nothing changed\n"
    )


def test_resume_of_a_channel_without_a_sender_is_one_line(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "resume", "t-1", "email")

    assert code == 2
    assert err == (
        "tenant: channel: tenant 't-1' has no email sender; expected one of its configured "
        "channels (none yet)\n"
    )


# --- nox -s demo-live ------------------------------------------------------------------------


def test_demo_now_keeps_the_clock_inside_the_whatsapp_window() -> None:
    # Wednesday 15:00 in São Paulo: inside the window.
    inside = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    # Sunday 12:00: quiet all day; Monday 09:30 is the demo's moment.
    sunday = datetime(2026, 11, 29, 15, 0, tzinfo=UTC)
    # Wednesday 20:58: the window closes within minutes.
    closing = datetime(2026, 11, 25, 23, 58, tzinfo=UTC)

    assert demo_live.demo_now(inside) == inside
    assert demo_live.demo_now(sunday) == datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
    assert demo_live.demo_now(closing) == datetime(2026, 11, 26, 12, 30, tzinfo=UTC)


def test_the_live_demo_sends_records_and_replays_without_a_provider_call(
    migrated_db: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["DATABASE_URL"] = migrated_db
    logs = tmp_path / "logs.jsonl"

    # Twice: the demo starts its tenant afresh, so a second run tells the same story.
    for _ in range(2):
        completed = subprocess.run(
            [sys.executable, "-m", "devtools.demo_live", "--logs", str(logs)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    out = completed.stdout
    assert "tenant demo-live: dispatch_mode dry_run → live" in out
    assert (
        "summary: dryRun false, sent 6, failed 2, unknown 0, skipped 2, deferred 0; "
        'sent by channel {"whatsapp": 2, "email": 3, "calendar": 1}'
    ) in out
    assert "fake Graph API requests 4 → 4, SES messages 4 → 4: no provider call" in out
    assert "opt-out: Carla Mendes (+55*******0003) on whatsapp, source provider_error" in out
    assert "yes (REQUEST)" in out
    assert out.count("signed (email)") == 4
    assert "demo-live: OK" in out
    # Contacts appear only masked.
    for lead in demo_live.LEADS:
        for contact in (lead.phone, lead.email):
            assert contact is None or contact not in out + logs.read_text()

    with psycopg.connect(migrated_db) as conn:
        ledger = conn.execute(
            "SELECT channel, status, attempt, error_code, retryable, "
            "provider_message_id IS NOT NULL FROM dispatches WHERE tenant_id = 'demo-live' "
            "ORDER BY channel, status, error_code"
        ).fetchall()
        booked = conn.execute(
            "SELECT count(*) FROM meetings WHERE tenant_id = 'demo-live' AND status = 'booked'"
        ).fetchone()
        provider_opt_outs = conn.execute(
            "SELECT channel FROM opt_outs WHERE tenant_id = 'demo-live' "
            "AND source = 'provider_error'"
        ).fetchall()
        mode = conn.execute("SELECT dispatch_mode FROM tenants WHERE id = 'demo-live'").fetchone()
    assert ledger == [
        ("calendar", "sent", 1, None, None, True),
        ("email", "sent", 1, None, None, True),
        ("email", "sent", 1, None, None, True),
        ("email", "sent", 1, None, None, True),
        ("whatsapp", "failed", 1, "131000", True, False),
        ("whatsapp", "failed", 1, "131026", False, False),
        ("whatsapp", "sent", 1, None, None, True),
        ("whatsapp", "sent", 1, None, None, True),
    ]
    assert booked == (1,)
    assert provider_opt_outs == [("whatsapp",)]
    assert mode == ("live",)
