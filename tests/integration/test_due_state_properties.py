"""Properties of the due state over generated histories, on a real PostgreSQL.

A run must take exactly the oldest due leads, where "due" is DOMAIN.md's definition computed
here from the test's own record of what happened (decisions, other services' updates, time):
an independent model, not the triggers, promotion and indexes that the service relies on. And
over any history, the rate caps and the cooldown hold in the ledger.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from psycopg import sql

from devtools.lambda_context import LocalLambdaContext
from devtools.localdb import with_database
from dry_run import bootstrap, handler
from tests.support import insert_tenant

pytestmark = pytest.mark.integration
NO_SHRINK = bool(__import__("os").environ.get("NO_SHRINK"))

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
# Wednesday 25 Nov 2026, 12:00 in São Paulo.
START = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
SUPPRESSED_STAGES = {"customer", "lost"}
# The columns whose change makes a lead ready to be examined again (migration 0010).
WATCHED = ("phone", "email", "whatsapp_opt_in", "email_opt_in", "opted_out_at", "stage")


@dataclass
class LeadModel:
    """What the test knows of one lead."""

    id: str
    created: int
    row: dict[str, Any]
    due_at: datetime | None = None  # None: never decided, or changed since: due now
    last_sent: datetime | None = None

    def suppressed(self) -> bool:
        return self.row["opted_out_at"] is not None or self.row["stage"] in SUPPRESSED_STAGES

    def due(self, now: datetime) -> bool:
        return not self.suppressed() and (self.due_at is None or self.due_at <= now)


@dataclass
class Model:
    cooldown: timedelta
    leads: list[LeadModel] = field(default_factory=list)

    def expected_batch(self, now: datetime, batch: int) -> list[str]:
        due = [lead for lead in sorted(self.leads, key=lambda lead: lead.created) if lead.due(now)]
        return [lead.id for lead in due[:batch]]

    def decided(self, decision: dict[str, Any], now: datetime) -> None:
        lead = next(lead for lead in self.leads if lead.id == decision["leadId"])
        reason, action = decision["reason"], decision["action"]
        if action == "would_send":
            lead.last_sent = now
            lead.due_at = now + self.cooldown
        elif action == "deferred":
            lead.due_at = datetime.fromisoformat(decision["notBefore"])
        elif reason == "cooldown":
            assert lead.last_sent is not None
            lead.due_at = lead.last_sent + self.cooldown
        elif reason == "duplicate_intent":
            local = now.astimezone(SAO_PAULO)
            midnight = datetime.combine(
                local.date() + timedelta(days=1), datetime.min.time(), SAO_PAULO
            )
            lead.due_at = max(now + self.cooldown, midnight)
        else:
            lead.due_at = now + self.cooldown


lead_rows = st.fixed_dictionaries(
    {
        "phone": st.sampled_from(["+5511987654321", "+5521998877665", "12345", None]),
        "email": st.sampled_from(["ana@example.com", "bruno@example.org", "nope", None]),
        "whatsapp_opt_in": st.booleans(),
        "email_opt_in": st.booleans(),
        "opted_out_at": st.sampled_from([None, None, None, START - timedelta(days=1)]),
        "stage": st.sampled_from(["new", "new", "nurturing", "meeting_requested", "lost"]),
    }
)
runs = st.tuples(
    st.just("run"),
    st.integers(min_value=1, max_value=4),
    st.sampled_from([0, 7, 45, 61, 200, 600, 1441, 4400]),
)
updates = st.tuples(
    st.just("update"),
    st.integers(min_value=0, max_value=9),
    st.sampled_from((*WATCHED, "full_name")),
)
histories = st.lists(st.one_of(runs, updates), min_size=3, max_size=16)


def _new_database(admin_url: str, template: str) -> tuple[str, str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return name, with_database(admin_url, name)


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _flip(column: str, value: Any) -> Any:
    flips: dict[str, Any] = {
        "phone": "+5511912345678" if value != "+5511912345678" else None,
        "email": "carla@example.net" if value != "carla@example.net" else "broken@",
        "whatsapp_opt_in": not value,
        "email_opt_in": not value,
        "opted_out_at": None if value is not None else START,
        "stage": {"new": "nurturing", "nurturing": "customer"}.get(value, "new"),
        "full_name": f"Renamed {uuid.uuid4().hex[:4]}",
    }
    return flips[column]


@pytest.mark.timeout(900)
@settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate] if NO_SHRINK else list(Phase),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(lead_rows, min_size=3, max_size=10),
    history=histories,
    cooldown_hours=st.sampled_from([0, 1, 72]),
    whatsapp_per_hour=st.sampled_from([1, 2, 1000]),
)
def test_every_run_takes_exactly_the_oldest_due_leads_and_the_caps_hold(  # noqa: PLR0917
    pg_admin_url: str,
    migrated_template: str,
    rows: list[dict[str, Any]],
    history: list[tuple[str, int, Any]],
    cooldown_hours: int,
    whatsapp_per_hour: int,
) -> None:
    name, url = _new_database(pg_admin_url, migrated_template)
    deps = bootstrap.build({"DATABASE_URL": url})
    try:
        model = Model(cooldown=timedelta(hours=cooldown_hours))
        with psycopg.connect(url) as conn:
            insert_tenant(
                conn,
                "t-1",
                cooldown_hours=cooldown_hours,
                limits={"whatsapp": (whatsapp_per_hour, 1000)},
            )
            for index, row in enumerate(rows):
                lead_id = conn.execute(
                    "INSERT INTO leads (tenant_id, phone, email, whatsapp_opt_in, email_opt_in, "
                    "opted_out_at, stage, created_at) VALUES ('t-1', %(phone)s, %(email)s, "
                    "%(whatsapp_opt_in)s, %(email_opt_in)s, %(opted_out_at)s, %(stage)s, "
                    "%(created)s) RETURNING id::text",
                    {**row, "created": START - timedelta(days=30) + timedelta(seconds=index)},
                ).fetchone()[0]  # type: ignore[index]
                model.leads.append(LeadModel(lead_id, index, dict(row)))
        now = START
        for step in history:
            if step[0] == "update":
                _, index, column = step
                lead = model.leads[index % len(model.leads)]
                value = _flip(column, lead.row.get(column))
                with psycopg.connect(url) as conn:
                    conn.execute(
                        sql.SQL("UPDATE leads SET {} = %s WHERE id = %s").format(
                            sql.Identifier(column)
                        ),
                        (value, lead.id),
                    )
                if column in WATCHED and value != lead.row.get(column):
                    lead.due_at = None  # ready to be examined again
                lead.row[column] = value
                continue
            _, batch, minutes = step
            now = now + timedelta(minutes=minutes)
            expected = model.expected_batch(now, batch)
            response = handler.handle(
                {"tenantId": "t-1", "batchSize": batch},
                LocalLambdaContext(),
                deps=deps,
                clock=lambda moment=now: moment,
            )
            handler.metrics.clear_metrics()
            assert [d["leadId"] for d in response["decisions"]] == expected, (now, step)
            for decision in response["decisions"]:
                model.decided(decision, now)

        with psycopg.connect(url) as conn:
            # The caps held in every rolling hour, whatever the history.
            worst = conn.execute(
                "SELECT coalesce(max(n), 0) FROM dry_run_log s, LATERAL ("
                " SELECT count(*) AS n FROM dry_run_log o"
                " WHERE o.channel = 'whatsapp' AND o.action = 'would_send'"
                " AND o.decided_at > s.decided_at - interval '1 hour'"
                " AND o.decided_at <= s.decided_at) w"
                " WHERE s.channel = 'whatsapp' AND s.action = 'would_send'"
            ).fetchone()[0]  # type: ignore[index]
            assert worst <= whatsapp_per_hour
            # No lead was sent to twice within the cooldown.
            if cooldown_hours:
                close = conn.execute(
                    "SELECT count(*) FROM (SELECT decided_at - lag(decided_at) OVER "
                    "(PARTITION BY lead_id ORDER BY decided_at) AS gap FROM dry_run_log "
                    "WHERE action = 'would_send') x WHERE gap < %s",
                    (timedelta(hours=cooldown_hours),),
                ).fetchone()[0]  # type: ignore[index]
                assert close == 0
            # The per-minute counts are exactly the ledger's.
            counts = conn.execute(
                "SELECT (SELECT coalesce(sum(sends), 0) FROM send_counts), "
                "(SELECT count(*) FROM dry_run_log WHERE action = 'would_send')"
            ).fetchone()
            assert counts is not None
            assert counts[0] == counts[1]
    finally:
        deps.close()
        _drop_database(pg_admin_url, name)
