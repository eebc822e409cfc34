"""``nox -s demo``: migrate, seed the demo tenant, invoke the handler as Lambda would, show it.

Runs against ``DATABASE_URL`` (the nox session points it at the embedded PostgreSQL).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from rich.console import Console
from rich.table import Table

from devtools.invoke import invoke_handler
from devtools.localdb import LOCAL_DIR, psql_command
from devtools.seed import DEMO_TENANT, seed_demo
from dry_run.contacts import mask_email, mask_phone
from migrate.files import default_migrations_dir
from migrate.runner import Runner

BATCH_SIZE = 50
LOG_FILE = LOCAL_DIR / "demo-logs.jsonl"


def _lead_rows(conn: psycopg.Connection[Any], ids: list[str]) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT l.id::text, l.full_name, l.phone, l.email, l.stage, "
        "coalesce(l.timezone, t.timezone) FROM leads l JOIN tenants t ON t.id = l.tenant_id "
        "WHERE l.id = ANY(%s::uuid[])",
        (ids,),
    ).fetchall()
    return {row[0]: row for row in rows}


def _local(iso: str | None, zone: str) -> str:
    if iso is None:
        return ""
    try:
        tz = ZoneInfo(zone)
    except (KeyError, ValueError):
        tz = ZoneInfo("America/Sao_Paulo")
    return datetime.fromisoformat(iso).astimezone(tz).strftime("%a %d/%m %H:%M")


def _decisions_table(response: dict[str, Any], leads: dict[str, tuple[Any, ...]]) -> Table:
    table = Table(title=f"Decisions of run {response['runId']} (tenant {response['tenantId']})")
    for column in (
        "#",
        "lead",
        "stage",
        "contact",
        "channel",
        "action",
        "reason",
        "template",
        "not before (lead's time)",
    ):
        table.add_column(column, overflow="fold")
    styles = {"would_send": "green", "deferred": "yellow", "skipped": "dim"}
    for number, decision in enumerate(response["decisions"], start=1):
        _id, name, phone, email, stage, zone = leads[decision["leadId"]]
        contact = mask_phone(phone) if decision["channel"] == "whatsapp" else mask_email(email)
        table.add_row(
            str(number),
            name,
            stage,
            contact or "",
            decision["channel"] or "-",
            decision["action"],
            decision["reason"],
            decision["template"] or "",
            _local(decision["notBefore"], zone),
            style=styles.get(decision["action"]),
        )
    return table


def _summary_table(response: dict[str, Any]) -> Table:
    table = Table(title="Summary by channel, action and reason")
    for column in ("channel", "action", "reason", "leads"):
        table.add_column(column)
    counts = Counter((d["channel"] or "-", d["action"], d["reason"]) for d in response["decisions"])
    for (channel, action, reason), count in sorted(counts.items()):
        table.add_row(channel, action, reason, str(count))
    return table


def main() -> int:
    """Run the demo; exit 1 if the handler answered with an error."""
    # Wide enough for the decisions table even when stdout is not a terminal (CI, pipes).
    console = Console(width=max(Console().width, 160))
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        console.print("DATABASE_URL is not set: run this through `nox -s demo`.")
        return 2
    LOCAL_DIR.mkdir(exist_ok=True)
    with psycopg.connect(url, autocommit=True) as conn:
        applied = Runner(conn, default_migrations_dir()).apply()
        seeded = seed_demo(conn)
    console.print(
        f"migrations: {len(applied.applied)} applied, {applied.already_applied} already there; "
        f"tenant {seeded.tenant_id}: {seeded.leads_total} leads ({seeded.leads_inserted} new)"
    )

    event = {"tenantId": DEMO_TENANT, "batchSize": BATCH_SIZE}
    with LOG_FILE.open("a", encoding="utf-8") as logs:
        response = invoke_handler(event, logs)
    if "error" in response:
        console.print(f"[red]handler error:[/red] {response['error']}")
        return 1

    with psycopg.connect(url) as conn:
        leads = _lead_rows(conn, [d["leadId"] for d in response["decisions"]])
        waiting = conn.execute(
            "SELECT count(DISTINCT d.lead_id) FROM dry_run_log d JOIN tenants t "
            "ON t.id = d.tenant_id WHERE d.tenant_id = %s AND d.run_id <> %s "
            "AND d.decided_at > now() - make_interval(hours => t.cooldown_hours) "
            "AND NOT (d.action = 'deferred' AND d.not_before <= now())",
            (DEMO_TENANT, response["runId"]),
        ).fetchone()
    console.print(_decisions_table(response, leads))
    console.print(_summary_table(response))
    summary = response["summary"]
    console.print(
        f"dry run: would_send {summary['would_send']}, skipped {summary['skipped']}, "
        f"deferred {summary['deferred']}; by channel {summary['byChannel']}; nothing was sent."
    )
    earlier = waiting[0] if waiting else 0
    if earlier:
        console.print(
            f"cooldown: {earlier} leads decided by earlier runs are not due again yet, so this "
            "run took the next ones."
        )
    else:
        console.print("cooldown: no earlier decisions yet; run the demo again to see it move on.")
    console.print(f"function log lines (JSON, contacts masked): {LOG_FILE}")
    console.print(
        "look at the rows: start `nox -s db` in another terminal, then "
        f"{psql_command(url)} -c 'SELECT run_id, lead_id, channel, action, reason, not_before "
        "FROM dry_run_log ORDER BY id DESC LIMIT 20'",
        soft_wrap=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
