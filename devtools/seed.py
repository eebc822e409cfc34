"""A deterministic demo tenant: a few hundred varied Brazilian leads (faker's pt_BR locale).

The same seed gives the same leads (ids included), so seeding twice changes nothing.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from faker import Faker

DEMO_TENANT = "test-001"
DEMO_LEADS = 300
SEED = 20261125
_NAMESPACE = uuid.UUID("6f1c2f0e-3b7a-4f5e-9a51-0c6de7d1a001")

BRAZIL_ZONES = [
    "America/Sao_Paulo",
    "America/Sao_Paulo",
    "America/Sao_Paulo",
    "America/Bahia",
    "America/Fortaleza",
    "America/Recife",
    "America/Belem",
    "America/Manaus",
    "America/Cuiaba",
    "America/Campo_Grande",
    "America/Porto_Velho",
    "America/Rio_Branco",
    "America/Boa_Vista",
    "America/Noronha",
]
AREA_CODES = [11, 21, 31, 41, 48, 51, 61, 62, 71, 81, 85, 91, 92, 65, 67, 68, 69, 95]
BAD_PHONES = ["(11) 98765-4321", "123", "+55 11", "telefone", "+5511", "0800 123 4567"]
BAD_EMAILS = ["joao@", "maria.silva", "a@b", "@example.com", "contato at empresa.com.br"]
STAGES = ["new"] * 6 + ["nurturing"] * 3 + ["meeting_requested", "customer", "lost"]


@dataclass(frozen=True)
class SeedReport:
    """What seeding did."""

    tenant_id: str
    leads_inserted: int
    leads_total: int


def _phone(rng: random.Random) -> str | None:
    roll = rng.random()
    if roll < 0.08:
        return None
    if roll < 0.16:
        return rng.choice(BAD_PHONES)
    return f"+55{rng.choice(AREA_CODES)}9{rng.choice('6789')}{rng.randrange(10**7):07d}"


def _email(rng: random.Random, fake: Faker, name: str) -> str | None:
    roll = rng.random()
    if roll < 0.08:
        return None
    if roll < 0.15:
        return rng.choice(BAD_EMAILS)
    local = fake.user_name() if rng.random() < 0.3 else ".".join(name.lower().split()[:2])
    return f"{local}@{fake.safe_domain_name()}"


def demo_leads(
    now: datetime, count: int = DEMO_LEADS, tenant_id: str = DEMO_TENANT
) -> list[dict[str, Any]]:
    """The demo leads; identical for the same seed except timestamps relative to ``now``."""
    rng = random.Random(SEED)
    fake = Faker("pt_BR")
    fake.seed_instance(SEED)
    base = datetime(2025, 6, 1, 12, tzinfo=UTC)
    leads = []
    for index in range(count):
        name = fake.name()
        inbound = None
        if rng.random() < 0.15:
            inbound = now - timedelta(hours=rng.uniform(1, 20))
        elif rng.random() < 0.2:
            inbound = now - timedelta(days=rng.uniform(2, 30))
        leads.append(
            {
                "id": uuid.uuid5(_NAMESPACE, f"{tenant_id}/{index}"),
                "full_name": name,
                "phone": _phone(rng),
                "email": _email(rng, fake, name),
                "whatsapp_opt_in": rng.random() < 0.65,
                "email_opt_in": rng.random() < 0.55,
                "opted_out_at": base + timedelta(days=index % 90) if rng.random() < 0.06 else None,
                "timezone": rng.choice([*BRAZIL_ZONES, None, None]),
                "stage": rng.choice(STAGES),
                "last_inbound_at": inbound,
                "created_at": base + timedelta(minutes=37 * index),
            }
        )
    return leads


LEAD_COLUMNS = (
    "id",
    "full_name",
    "phone",
    "email",
    "whatsapp_opt_in",
    "email_opt_in",
    "opted_out_at",
    "timezone",
    "stage",
    "last_inbound_at",
    "created_at",
)


def insert_leads(conn: psycopg.Connection[Any], tenant_id: str, leads: list[dict[str, Any]]) -> int:
    """Insert leads that are not there yet (by id) with one COPY-free batch; return how many."""
    placeholders = ", ".join(["%s"] * (len(LEAD_COLUMNS) + 1))
    with conn.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO leads (tenant_id, {', '.join(LEAD_COLUMNS)}) VALUES ({placeholders}) "
            "ON CONFLICT (id) DO NOTHING",
            [(tenant_id, *(lead[column] for column in LEAD_COLUMNS)) for lead in leads],
        )
        return max(cursor.rowcount, 0)


def seed_tenant(
    conn: psycopg.Connection[Any],
    tenant_id: str,
    leads: list[dict[str, Any]],
    limits: dict[str, tuple[int, int]],
) -> SeedReport:
    """Create a tenant (if missing), its channel limits and its leads, in one transaction."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO tenants (id, name, timezone, cooldown_hours) "
            "VALUES (%s, %s, 'America/Sao_Paulo', 72) ON CONFLICT (id) DO NOTHING",
            (tenant_id, f"Demo {tenant_id}"),
        )
        for channel, (per_hour, per_day) in limits.items():
            conn.execute(
                "INSERT INTO channel_limits (tenant_id, channel, per_hour, per_day) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (tenant_id, channel, per_hour, per_day),
            )
        inserted = insert_leads(conn, tenant_id, leads)
        total = conn.execute(
            "SELECT count(*) FROM leads WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()
    return SeedReport(tenant_id, inserted, total[0] if total else 0)


def seed_demo(conn: psycopg.Connection[Any], now: datetime | None = None) -> SeedReport:
    """The demo tenant ``test-001``: 300 leads, tight WhatsApp and calendar caps."""
    return seed_tenant(
        conn,
        DEMO_TENANT,
        demo_leads(now or datetime.now(UTC)),
        limits={"whatsapp": (15, 120), "calendar": (10, 40)},
    )
