"""Helpers the live-mode tests share: a live tenant with a WhatsApp sender, leads with distinct
phones, a LiveRuntime against the fake Graph API (no AWS: the token comes from a fake fetcher),
a sender that "crashes" the invocation, and entry points for spawned processes.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from dry_run.live import LiveRuntime
from dry_run.senders import Dispatch, Sender, SendResult
from dry_run.senders.whatsapp import TokenCache, WhatsAppSender

TOKEN = "fake-graph-token"
API_VERSION = "v21.0"
SECRET_PREFIX = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:micro-agent/test/tenants/"


def sender_number(tenant_id: str) -> str:
    """A WhatsApp phone number id of the tenant's own (the column is unique across tenants)."""
    return str(int(hashlib.sha256(tenant_id.encode()).hexdigest()[:12], 16))


def phone(index: int) -> str:
    """A valid Brazilian mobile number in E.164, distinct for each index below 10,000."""
    return f"+55119876{index:05d}"


def seed_live_tenant(
    conn: Any,
    tenant_id: str,
    *,
    cooldown_hours: int = 0,
    mode: str = "live",
    whatsapp_per_hour: int | None = None,
) -> str:
    """A tenant in ``mode`` with a WhatsApp sender; cooldown 0 by default, so that only the
    dispatch key stands between a lead and a second send on the same local day."""
    conn.execute(
        "INSERT INTO tenants (id, name, cooldown_hours, dispatch_mode) VALUES (%s, %s, %s, %s)",
        (tenant_id, f"Tenant {tenant_id}", cooldown_hours, mode),
    )
    conn.execute(
        "INSERT INTO tenant_senders (tenant_id, channel, sender, secret_arn) "
        "VALUES (%s, 'whatsapp', %s, %s)",
        (tenant_id, sender_number(tenant_id), SECRET_PREFIX + tenant_id),
    )
    if whatsapp_per_hour is not None:
        conn.execute(
            "INSERT INTO channel_limits (tenant_id, channel, per_hour, per_day) "
            "VALUES (%s, 'whatsapp', %s, %s)",
            (tenant_id, whatsapp_per_hour, max(whatsapp_per_hour, 500)),
        )
    return tenant_id


def insert_phone_leads(
    conn: Any, tenant_id: str, phones: Iterable[str], *, email_opt_in: bool = False
) -> list[str]:
    """One WhatsApp-reachable lead per phone, oldest first; their ids, in that order.

    Email consent is off by default, so that a lead WhatsApp cannot reach has no other channel.
    """
    ids: list[str] = []
    for index, number in enumerate(phones):
        row = conn.execute(
            "INSERT INTO leads (tenant_id, full_name, phone, email, whatsapp_opt_in, "
            "email_opt_in, created_at) VALUES (%s, %s, %s, %s, true, %s, "
            "timestamptz '2026-01-01 00:00Z' + make_interval(secs => %s)) RETURNING id::text",
            (tenant_id, f"Lead {index}", number, f"lead{index}@example.com", email_opt_in, index),
        ).fetchone()
        ids.append(row[0])
    return ids


def graph_runtime(
    graph_url: str, *, read_timeout_s: float = 5.0, concurrency: int = 4
) -> LiveRuntime:
    """A LiveRuntime whose WhatsApp sender talks to the fake Graph API at ``graph_url``."""
    sender = WhatsAppSender(
        graph_url,
        API_VERSION,
        TokenCache(lambda arn, client: {"accessToken": TOKEN}),
        connect_timeout_s=2.0,
        read_timeout_s=read_timeout_s,
    )
    return LiveRuntime(senders={"whatsapp": sender}, concurrency=concurrency)


class SimulatedCrash(BaseException):
    """The invocation dies here (a BaseException: no ``except Exception`` catches it)."""


class CrashingSender:
    """Dies before the provider call, or (with ``inner``) right after it: the claim is committed
    and the second transaction, which records the answer, never runs.

    It has no ``close``: the runtime it belongs to never closes the wrapped sender's pool.
    """

    def __init__(self, inner: Sender | None = None) -> None:
        self.inner = inner

    def send(self, dispatch: Dispatch) -> SendResult:
        if self.inner is not None:
            self.inner.send(dispatch)
        raise SimulatedCrash(dispatch.dispatch_key)


def crashing_runtime(inner: LiveRuntime | None = None) -> LiveRuntime:
    """A runtime whose WhatsApp sends crash the invocation (after the call, with ``inner``)."""
    wrapped = None if inner is None else inner.senders["whatsapp"]
    return LiveRuntime(senders={"whatsapp": CrashingSender(wrapped)}, concurrency=4)


def callback_keys(requests: Iterable[Any]) -> Counter[str]:
    """Provider calls per dispatch key (the body's ``biz_opaque_callback_data``)."""
    return Counter(
        str(request.json.get("biz_opaque_callback_data"))
        for request in requests
        if isinstance(request.json, dict)
    )


def run_live_with_own_clock(  # noqa: PLR0917 - a process entry point takes plain arguments
    url: str,
    graph_url: str,
    tenant_id: str,
    run_id: str,
    batch_size: int,
    base: datetime,
    offset_s: float,
    barrier: Any,
    go: Any = None,
    delay_s: float = 0.0,
) -> dict[str, Any]:
    """A separate process's live run: its own connection and senders, its own clock
    (``base + offset``, advancing in real time), started with the others at ``barrier`` (and
    then, when given, once ``go`` is set, or ``delay_s`` later)."""
    import psycopg

    from dry_run.service import run_invocation

    runtime = graph_runtime(graph_url)
    started = time.monotonic()

    def clock() -> datetime:
        return base + timedelta(seconds=offset_s + time.monotonic() - started)

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT 1")  # connected before the start, like a warm container
            barrier.wait(timeout=60)
            if go is not None:
                go.wait(60)
            time.sleep(delay_s)
            result = run_invocation(
                conn,
                tenant_id=tenant_id,
                batch_size=batch_size,
                run_id=run_id,
                clock=clock,
                dispatch_enabled=True,
                live_runtime=lambda: runtime,
            )
        return result.to_response()
    finally:
        runtime.close()


def run_live_until_killed(
    url: str, graph_url: str, tenant_id: str, run_id: str, now: datetime
) -> None:
    """A process's live run at ``now``, for a test to kill while its provider call is held."""
    import psycopg

    from dry_run.service import run_invocation

    runtime = graph_runtime(graph_url, read_timeout_s=60.0)
    with psycopg.connect(url, autocommit=True) as conn:
        run_invocation(
            conn,
            tenant_id=tenant_id,
            batch_size=10,
            run_id=run_id,
            clock=lambda: now,
            dispatch_enabled=True,
            live_runtime=lambda: runtime,
        )
