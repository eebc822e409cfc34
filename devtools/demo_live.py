"""``nox -s demo-live``: the main job in live mode, on this machine, with no network.

Nothing runs outside this process but PostgreSQL:

- a fake of Meta's Graph API (``devtools.fake_graph``) and moto's server (Secrets Manager and
  SES v2) on free ports of 127.0.0.1;
- the tenant ``demo-live``, started afresh each time (the demo owns it): a dozen leads, each
  showing one rule, its WhatsApp token and the unsubscribe signing key stored as secrets, its
  senders registered and its mode switched to ``live`` with ``devtools.tenant``;
- two scripted WhatsApp errors: 131026 (undeliverable: failed, and an opt-out) and 131000
  (Meta's transient fault: failed, retryable);
- the real handler (``dry_run.handler.handle``) with ``MICRO_AGENT_DISPARO_ENABLED=true``.

It prints what the providers received next to the ``dispatches`` ledger, the meetings booked and
the opt-outs written, replays the same runId to show that a replay calls no provider, and exits
1 when anything differs from what the rules predict. Phones and emails appear only masked; the
function's own JSON log lines go to ``.local/demo-live-logs.jsonl``.

    python -m devtools.localdb run -- python -m devtools.demo_live [--logs FILE]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib
import json
import logging
import os
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_string
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import IO, Any, NamedTuple
from zoneinfo import ZoneInfo

import boto3
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from devtools import tenant as tenant_cli
from devtools.fake_graph import FakeGraph, running_fake_graph
from devtools.lambda_context import LocalLambdaContext
from devtools.localdb import LOCAL_DIR
from devtools.seed import seed_tenant
from dry_run.contacts import mask_email, mask_phone, normalize_email, normalize_phone
from dry_run.quiet_hours import next_allowed_start
from dry_run.unsubscribe import verify
from migrate.files import default_migrations_dir
from migrate.runner import MigrationError, Runner

DEMO_TENANT = "demo-live"
ZONE = ZoneInfo("America/Sao_Paulo")
REGION = "us-east-1"
# The stack's secrets path as Pulumi lays it out (micro-agent/<stack>/...), for a stack "demo".
SECRETS_PATH = "micro-agent/demo"
WHATSAPP_NUMBER_ID = "106540352242922"
ACCESS_TOKEN = "demo-live-access-token"  # noqa: S105 - the fake Graph API's token
FROM_ADDRESS = "vendas@acme-demo.com.br"
API_VERSION = "v21.0"
# The stack's SES configuration set (pulumi/ses.py names it <prefix>-outreach).
CONFIGURATION_SET = "micro-agent-demo-outreach"
# No inbound webhook runs in this demo: the demo checks the link's signed token itself.
UNSUBSCRIBE_URL = "http://127.0.0.1:8000/unsubscribe"
BATCH_SIZE = 20
LOG_FILE = LOCAL_DIR / "demo-live-logs.jsonl"
_NAMESPACE = uuid.UUID("0c5d8d3e-6a0f-4f7e-8d6b-5b1f0a9e2c11")
# Printed prefixes of dispatch keys and provider message ids.
KEY_PREFIX = 10
ID_PREFIX = 16
# Tables that hold a tenant's rows, children first (how the demo starts its tenant afresh).
_TENANT_TABLES = (
    "live_log",
    "dry_run_log",
    "send_counts",
    "dispatches",
    "meetings",
    "opt_outs",
    "runs",
    "tenant_senders",
    "channel_limits",
    "message_templates",
    "leads",
    "tenants",
)


class Expected(NamedTuple):
    """What the run must record for a lead."""

    action: str
    channel: str | None
    reason: str
    error_code: str | None = None


@dataclass(frozen=True)
class DemoLead:
    """One demo lead and the rule it shows; ``expected`` None: never taken (suppressed)."""

    key: str
    name: str
    story: str
    expected: Expected | None
    phone: str | None = None
    email: str | None = None
    whatsapp_opt_in: bool = False
    email_opt_in: bool = False
    stage: str = "new"
    opted_out: bool = False
    inbound_hours_ago: float | None = None
    # An opt_outs row for WhatsApp only (the lead answered PARAR).
    whatsapp_opt_out: bool = False
    # In MICRO_AGENT_SANDBOX_RECIPIENTS (its valid phone and email).
    in_sandbox: bool = True
    # The Meta error the fake Graph API answers for this lead's number.
    whatsapp_error: int | None = None

    @property
    def lead_id(self) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"{DEMO_TENANT}/{self.key}"))

    def contact(self, channel: str | None) -> str:
        """The lead's contact on a channel, masked."""
        if channel == "whatsapp" or (channel is None and self.phone and not self.email):
            return mask_phone(self.phone) or "-"
        return mask_email(self.email) or mask_phone(self.phone) or "-"


LEADS: tuple[DemoLead, ...] = (
    DemoLead(
        "ana",
        "Ana Souza",
        "WhatsApp, first touch: an approved template",
        Expected("sent", "whatsapp", "whatsapp_template"),
        phone="+5511987650001",
        whatsapp_opt_in=True,
    ),
    DemoLead(
        "bruno",
        "Bruno Lima",
        "wrote to us 2 h ago: a free-form session message",
        Expected("sent", "whatsapp", "whatsapp_session"),
        phone="+5521987650002",
        whatsapp_opt_in=True,
        stage="nurturing",
        inbound_hours_ago=2,
    ),
    DemoLead(
        "carla",
        "Carla Mendes",
        "Meta answers 131026 (undeliverable): failed, and a WhatsApp opt-out",
        Expected("failed", "whatsapp", "whatsapp_template", "131026"),
        phone="+5531987650003",
        whatsapp_opt_in=True,
        whatsapp_error=131026,
    ),
    DemoLead(
        "diego",
        "Diego Alves",
        "Meta answers 131000 (transient): failed, retryable in 5 min",
        Expected("failed", "whatsapp", "whatsapp_template", "131000"),
        phone="+5541987650004",
        whatsapp_opt_in=True,
        whatsapp_error=131000,
    ),
    DemoLead(
        "elisa",
        "Elisa Rocha",
        "email only: an email with one-click unsubscribe",
        Expected("sent", "email", "email_opt_in"),
        email="elisa.rocha@cliente-demo.com.br",
        email_opt_in=True,
    ),
    DemoLead(
        "felipe",
        "Felipe Castro",
        "phone is not E.164: email instead",
        Expected("sent", "email", "email_opt_in"),
        phone="(11) 98765-4321",
        whatsapp_opt_in=True,
        email="felipe.castro@cliente-demo.com.br",
        email_opt_in=True,
        stage="nurturing",
    ),
    DemoLead(
        "gabriela",
        "Gabriela Nunes",
        "asked for a meeting: an invitation, and the slot booked",
        Expected("sent", "calendar", "meeting_requested"),
        phone="+5551987650007",
        whatsapp_opt_in=True,
        email="gabriela.nunes@cliente-demo.com.br",
        stage="meeting_requested",
    ),
    DemoLead(
        "isabela",
        "Isabela Prado",
        "answered PARAR on WhatsApp: email instead",
        Expected("sent", "email", "email_opt_in"),
        phone="+5561987650008",
        whatsapp_opt_in=True,
        email="isabela.prado@cliente-demo.com.br",
        email_opt_in=True,
        whatsapp_opt_out=True,
    ),
    DemoLead(
        "joao",
        "João Pereira",
        "not in MICRO_AGENT_SANDBOX_RECIPIENTS: not contacted",
        Expected("skipped", "whatsapp", "sandbox_blocked"),
        phone="+5571987650009",
        whatsapp_opt_in=True,
        in_sandbox=False,
    ),
    DemoLead(
        "karina",
        "Karina Dias",
        "no consent on any channel",
        Expected("skipped", None, "no_eligible_channel"),
        phone="+5581987650010",
        email="karina.dias@cliente-demo.com.br",
    ),
    DemoLead(
        "heitor",
        "Heitor Gomes",
        "revoked consent (LGPD): never taken",
        None,
        phone="+5585987650011",
        whatsapp_opt_in=True,
        opted_out=True,
    ),
    DemoLead(
        "marcos",
        "Marcos Teixeira",
        "already a customer: never taken",
        None,
        phone="+5591987650012",
        whatsapp_opt_in=True,
        stage="customer",
    ),
)


@dataclass
class Check:
    """What the demo expected and what it found; problems make it exit 1."""

    problems: list[str] = field(default_factory=list)

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


# --- the world: clock, database, fake providers ------------------------------------------------


def demo_now(real_now: datetime) -> datetime:
    """``real_now``, unless WhatsApp's quiet hours hold in São Paulo now or within 5 minutes:
    then 30 minutes into the next window, so that the demo shows sends whatever the hour."""
    for moment in (real_now, real_now + timedelta(minutes=5)):
        opens = next_allowed_start(moment, ZONE)
        if opens is not None:
            return opens + timedelta(minutes=30)
    return real_now


def reset_tenant(conn: psycopg.Connection[Any], tenant_id: str = DEMO_TENANT) -> None:
    """Delete every row of the demo's tenant (it belongs to the demo alone)."""
    with conn.transaction():
        for table in _TENANT_TABLES:
            column = "id" if table == "tenants" else "tenant_id"
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                    sql.Identifier(table), sql.Identifier(column)
                ),
                (tenant_id,),
            )


def lead_rows(now: datetime) -> list[dict[str, Any]]:
    """The demo leads as ``devtools.seed`` inserts them, oldest first."""
    base = now - timedelta(days=30)
    return [
        {
            "id": uuid.UUID(lead.lead_id),
            "full_name": lead.name,
            "phone": lead.phone,
            "email": lead.email,
            "whatsapp_opt_in": lead.whatsapp_opt_in,
            "email_opt_in": lead.email_opt_in,
            "opted_out_at": base if lead.opted_out else None,
            "timezone": None,
            "stage": lead.stage,
            "last_inbound_at": (
                None
                if lead.inbound_hours_ago is None
                else now - timedelta(hours=lead.inbound_hours_ago)
            ),
            "created_at": base + timedelta(minutes=index),
        }
        for index, lead in enumerate(LEADS)
    ]


def seed(conn: psycopg.Connection[Any], now: datetime) -> int:
    """Start the demo tenant afresh; how many leads it has."""
    reset_tenant(conn)
    report = seed_tenant(conn, DEMO_TENANT, lead_rows(now), limits={})
    with conn.transaction():
        for lead in LEADS:
            if lead.whatsapp_opt_out:
                conn.execute(
                    "INSERT INTO opt_outs (tenant_id, lead_id, channel, source) "
                    "VALUES (%s, %s, 'whatsapp', 'keyword')",
                    (DEMO_TENANT, lead.lead_id),
                )
    return report.leads_total


def sandbox_recipients() -> list[str]:
    """The sandbox: every valid contact of the demo's leads except those left out on purpose."""
    allowed: list[str] = []
    for lead in LEADS:
        if not lead.in_sandbox:
            continue
        phone = normalize_phone(lead.phone) if lead.phone else None
        email = normalize_email(lead.email) if lead.email else None
        allowed += [value for value in (phone, email) if value]
    return allowed


@contextlib.contextmanager
def running_moto() -> Iterator[str]:
    """moto's server on a free port of 127.0.0.1, its state reset; its URL."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - Flask loads only here

    # The server logs every request through werkzeug; the demo prints what matters itself.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        _reset_moto(url)
        yield url
    finally:
        with contextlib.suppress(Exception):
            _reset_moto(url)
        server.stop()


def _reset_moto(url: str) -> None:
    # Our own moto server's reset endpoint, on 127.0.0.1.
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        response.read()


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (None: unset) environment variables for the block, then put them back."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class AwsSetup:
    """What the demo created in moto."""

    whatsapp_secret_arn: str
    unsubscribe_secret_arn: str
    tenant_secrets_prefix: str
    signing_key: bytes


def prepare_aws(moto_url: str) -> AwsSetup:
    """The tenant's WhatsApp token secret, the unsubscribe key's secret, the SES identity and
    configuration set."""
    clients: dict[str, Any] = {
        "endpoint_url": moto_url,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    secrets = boto3.client("secretsmanager", **clients)
    whatsapp = secrets.create_secret(
        Name=f"{SECRETS_PATH}/tenants/{DEMO_TENANT}/whatsapp",
        SecretString=json.dumps({"accessToken": ACCESS_TOKEN}),
    )
    signing_key = base64.b64encode(os.urandom(32)).decode()
    unsubscribe = secrets.create_secret(
        Name=f"{SECRETS_PATH}/unsubscribe",
        SecretString=json.dumps({"signingKey": signing_key}),
    )
    ses = boto3.client("sesv2", **clients)
    ses.create_email_identity(EmailIdentity=FROM_ADDRESS)
    ses.create_configuration_set(ConfigurationSetName=CONFIGURATION_SET)
    arn = str(whatsapp["ARN"])
    return AwsSetup(
        whatsapp_secret_arn=arn,
        unsubscribe_secret_arn=str(unsubscribe["ARN"]),
        tenant_secrets_prefix=arn.split(":secret:", maxsplit=1)[0]
        + f":secret:{SECRETS_PATH}/tenants/",
        # As the function uses it: the secret's text, as bytes.
        signing_key=signing_key.encode(),
    )


def function_environment(
    database_url: str, graph_url: str, moto_url: str, aws: AwsSetup
) -> dict[str, str | None]:
    """The dry-run function's environment for a live run against the local fakes."""
    return {
        "DATABASE_URL": database_url,
        "MICRO_AGENT_DISPARO_ENABLED": "true",
        "MICRO_AGENT_SANDBOX_RECIPIENTS": ",".join(sandbox_recipients()),
        "WHATSAPP_GRAPH_URL": graph_url,
        "WHATSAPP_API_VERSION": API_VERSION,
        "TENANT_SECRETS_PREFIX": aws.tenant_secrets_prefix,
        "UNSUBSCRIBE_URL": UNSUBSCRIBE_URL,
        "UNSUBSCRIBE_SECRET_ARN": aws.unsubscribe_secret_arn,
        "SES_CONFIGURATION_SET": CONFIGURATION_SET,
        "SEND_CONCURRENCY": "4",
        # boto3 (Secrets Manager, SES v2) talks to moto's server, never to AWS.
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


# --- the invocation ----------------------------------------------------------------------------


@dataclass
class Invoker:
    """The handler with one container's dependencies, its clock and its log stream."""

    logs: IO[str]
    clock: Callable[[], datetime]
    _module: Any = None
    _deps: Any = None

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        with contextlib.redirect_stdout(self.logs):
            if self._module is None:
                self._module = importlib.import_module("dry_run.handler")
                bootstrap = importlib.import_module("dry_run.bootstrap")
                self._deps = bootstrap.build(os.environ)
            # Powertools' logger keeps the stream it was created with (sys.stdout at import):
            # point it at this invocation's log file. Metrics print to stdout.
            self._module.logger.registered_handler.setStream(self.logs)
            response: dict[str, Any] = self._module.handle(
                event, LocalLambdaContext(), deps=self._deps, clock=self.clock
            )
            self._module.metrics.flush_metrics()
        return response

    def close(self) -> None:
        if self._deps is not None:
            self._deps.close()
        if self._module is not None:
            # The log file closes after this: leave the logger a stream that stays open.
            self._module.logger.registered_handler.setStream(sys.stdout)


def ses_messages(region: str = REGION) -> list[tuple[str, EmailMessage]]:
    """``(message id, parsed message)`` for each raw message moto's SES accepted."""
    from moto.backends import get_backend  # noqa: PLC0415
    from moto.core.models import DEFAULT_ACCOUNT_ID  # noqa: PLC0415

    found = []
    for sent in get_backend("ses")[DEFAULT_ACCOUNT_ID][region].sent_messages:
        raw = getattr(sent, "raw_data", None)
        if raw is None:
            continue
        message = message_from_string(raw, policy=default_policy)
        assert isinstance(message, EmailMessage)
        found.append((str(sent.id), message))
    return found


# --- what the database holds -------------------------------------------------------------------


def ledger(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """The tenant's ``dispatches`` rows by dispatch key."""
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(
            "SELECT dispatch_key, lead_id::text AS lead_id, channel, status, attempt, "
            "provider_message_id, error_code, retryable, retry_at, claimed_at "
            "FROM dispatches WHERE tenant_id = %s ORDER BY id",
            (DEMO_TENANT,),
        ).fetchall()
    return {row["dispatch_key"]: row for row in rows}


def meetings(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "SELECT lead_id::text AS lead_id, dispatch_key, starts_at, ends_at, status "
            "FROM meetings WHERE tenant_id = %s ORDER BY starts_at",
            (DEMO_TENANT,),
        ).fetchall()


def opt_outs(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "SELECT lead_id::text AS lead_id, channel, source FROM opt_outs "
            "WHERE tenant_id = %s ORDER BY id",
            (DEMO_TENANT,),
        ).fetchall()


def live_log_actions(conn: psycopg.Connection[Any], run_id: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT action, count(*) FROM live_log WHERE tenant_id = %s AND run_id = %s "
        "GROUP BY action ORDER BY action",
        (DEMO_TENANT, run_id),
    ).fetchall()
    return {str(action): int(count) for action, count in rows}


# --- printing ----------------------------------------------------------------------------------


def _prefix(value: str | None, size: int) -> str:
    if not value:
        return ""
    return value if len(value) <= size else value[:size] + "…"


def _local(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(ZONE).strftime("%a %d/%m %H:%M")


def _time(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(ZONE).strftime("%d/%m %H:%M")


def decisions_table(
    response: dict[str, Any], rows: Mapping[str, dict[str, Any]], by_id: Mapping[str, DemoLead]
) -> Table:
    table = Table(title=f"Decisions of run {response['runId']}, next to the dispatches ledger")
    for column in (
        "lead",
        "contact",
        "channel",
        "action",
        "reason",
        "template",
        "key",
        "status",
        "attempt",
        "provider id",
        "error",
        "retry at (SP)",
    ):
        table.add_column(column, overflow="fold")
    styles = {"sent": "green", "failed": "red", "unknown": "magenta", "skipped": "dim"}
    for decision in response["decisions"]:
        lead = by_id.get(decision["leadId"])
        row = rows.get(decision["dispatchKey"] or "", {})
        table.add_row(
            escape(lead.name if lead else decision["leadId"]),
            escape(lead.contact(decision["channel"]) if lead else ""),
            decision["channel"] or "-",
            decision["action"],
            decision["reason"],
            decision["template"] or "",
            _prefix(decision["dispatchKey"], KEY_PREFIX),
            str(row.get("status", "")),
            str(row.get("attempt", "")),
            _prefix(row.get("provider_message_id"), ID_PREFIX),
            str(row.get("error_code") or ""),
            _time(row.get("retry_at")),
            style=styles.get(decision["action"]),
        )
    return table


def graph_table(graph: FakeGraph) -> Table:
    table = Table(title="What the fake Graph API received (POST /v21.0/<number>/messages)")
    for column in ("#", "to", "type", "template", "language", "callback key", "bearer ok"):
        table.add_column(column)
    for number, request in enumerate(graph.requests, start=1):
        body = request.json if isinstance(request.json, dict) else {}
        template = body.get("template") or {}
        table.add_row(
            str(number),
            mask_phone(request.recipient) or "-",
            str(body.get("type", "")),
            str(template.get("name", "")),
            str((template.get("language") or {}).get("code", "")),
            _prefix(body.get("biz_opaque_callback_data"), KEY_PREFIX),
            "yes" if request.headers.get("Authorization") == f"Bearer {graph.token}" else "NO",
        )
    return table


def unsubscribe_claim(message: EmailMessage, signing_key: bytes) -> str:
    """Whether the message's one-click link carries a token we signed, and for what."""
    link = str(message.get("List-Unsubscribe", ""))
    if not (link.startswith("<") and "token=" in link):
        return "missing"
    try:
        claim = verify(link[1:-1].split("token=", 1)[1], key=signing_key)
    except ValueError:
        return "bad token"
    return f"signed ({claim.channel})"


def ses_table(messages: list[tuple[str, EmailMessage]], signing_key: bytes) -> Table:
    table = Table(title="What SES received (moto's SES v2, Content.Raw)")
    for column in (
        "#",
        "to",
        "subject",
        "text/calendar",
        "List-Unsubscribe",
        "One-Click post",
        "Message-ID key",
        "SES id",
    ):
        table.add_column(column, overflow="fold")
    for number, (message_id, message) in enumerate(messages, start=1):
        parts = [part.get_content_type() for part in message.walk()]
        calendar = "text/calendar" in parts
        method = ""
        if calendar:
            (part,) = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
            method = f" ({part.get_param('method')})"
        table.add_row(
            str(number),
            mask_email(str(message["To"])) or "-",
            escape(str(message["Subject"])),
            ("yes" + method) if calendar else "no",
            unsubscribe_claim(message, signing_key),
            "yes" if message.get("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click" else "no",
            _prefix(str(message["Message-ID"]).strip("<>"), KEY_PREFIX),
            _prefix(message_id, ID_PREFIX),
        )
    return table


def meetings_table(rows: list[dict[str, Any]], by_id: Mapping[str, DemoLead]) -> Table:
    table = Table(title="Meetings booked (São Paulo time)")
    for column in ("lead", "starts", "ends", "status", "key"):
        table.add_column(column)
    for row in rows:
        lead = by_id.get(row["lead_id"])
        table.add_row(
            escape(lead.name if lead else row["lead_id"]),
            _local(row["starts_at"]),
            _local(row["ends_at"]),
            row["status"],
            _prefix(row["dispatch_key"], KEY_PREFIX),
        )
    return table


# --- the checks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What a run answered and left behind: the ledger, the providers, the other tables."""

    response: dict[str, Any]
    ledger: Mapping[str, dict[str, Any]]
    graph_requests: int
    ses: list[tuple[str, EmailMessage]]
    meetings: list[dict[str, Any]]
    opt_outs: list[dict[str, Any]]
    live_log: dict[str, int]

    @property
    def sends(self) -> list[dict[str, Any]]:
        """The decisions that called a provider."""
        return [
            d for d in self.response["decisions"] if d["action"] in ("sent", "failed", "unknown")
        ]


def observe(url: str, response: dict[str, Any], graph: FakeGraph) -> Observed:
    """The state after a run."""
    with psycopg.connect(url) as conn:
        return Observed(
            response=response,
            ledger=ledger(conn),
            graph_requests=len(graph.requests),
            ses=ses_messages(),
            meetings=meetings(conn),
            opt_outs=opt_outs(conn),
            live_log=live_log_actions(conn, response["runId"]),
        )


def check_decisions(check: Check, seen: Observed) -> None:
    """Each lead's decision is its rule's, and each send is in the ledger as answered."""
    decided = {d["leadId"]: d for d in seen.response["decisions"]}
    for lead in LEADS:
        decision = decided.get(lead.lead_id)
        if lead.expected is None or decision is None:
            check.expect(
                decision is None and lead.expected is None,
                f"{lead.name}: expected {lead.expected or 'not taken'}, got {decision}",
            )
            continue
        got = Expected(
            decision["action"], decision["channel"], decision["reason"], decision.get("errorCode")
        )
        check.expect(got == lead.expected, f"{lead.name}: expected {lead.expected}, got {got}")
    for decision in seen.sends:
        row = seen.ledger.get(decision["dispatchKey"])
        check.expect(
            row is not None and row["status"] == decision["action"],
            f"lead {decision['leadId']}: the ledger holds {row and row['status']} for a "
            f"{decision['action']} send",
        )
        if row is not None and row["status"] == "sent":
            check.expect(bool(row["provider_message_id"]), "a sent row has no provider id")
    retryable = [row for row in seen.ledger.values() if row["error_code"] == "131000"]
    check.expect(
        len(retryable) == 1
        and retryable[0]["retryable"] is True
        and retryable[0]["retry_at"] is not None
        and timedelta(minutes=5)
        <= retryable[0]["retry_at"] - retryable[0]["claimed_at"]
        < timedelta(minutes=6),
        "the 131000 failure is not recorded retryable with a 5-minute backoff",
    )


def check_providers(check: Check, seen: Observed, graph: FakeGraph, signing_key: bytes) -> None:
    """The providers received exactly the sends, and what they imply was written."""
    whatsapp_keys = sorted(d["dispatchKey"] for d in seen.sends if d["channel"] == "whatsapp")
    received_keys = sorted(
        str(request.json.get("biz_opaque_callback_data"))
        for request in graph.requests
        if isinstance(request.json, dict)
    )
    check.expect(
        received_keys == whatsapp_keys,
        f"the fake Graph API received {len(received_keys)} request(s) for "
        f"{len(whatsapp_keys)} WhatsApp send(s), or with other keys",
    )
    email_sends = [d for d in seen.sends if d["channel"] in ("email", "calendar")]
    check.expect(
        len(seen.ses) == len(email_sends),
        f"SES received {len(seen.ses)} message(s) for {len(email_sends)} email/calendar send(s)",
    )
    for _, message in seen.ses:
        check.expect(
            unsubscribe_claim(message, signing_key).startswith("signed"),
            f"an email to {mask_email(str(message['To']))} has no valid one-click link",
        )
    calendar_keys = {d["dispatchKey"] for d in seen.sends if d["channel"] == "calendar"}
    check.expect(
        {row["dispatch_key"] for row in seen.meetings if row["status"] == "booked"}
        == calendar_keys,
        "the booked meetings are not exactly the invitations sent",
    )
    unreachable = {lead.lead_id for lead in LEADS if lead.whatsapp_error in (131026, 131050)}
    provider_opt_outs = {
        row["lead_id"]
        for row in seen.opt_outs
        if row["source"] == "provider_error" and row["channel"] == "whatsapp"
    }
    check.expect(
        provider_opt_outs == unreachable,
        "the provider_error opt-outs are not exactly the undeliverable numbers",
    )


# --- main --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """The local stand-ins the live run talks to."""

    graph: FakeGraph
    moto_url: str
    aws: AwsSetup


def start_world(stack: contextlib.ExitStack, console: Console, url: str) -> World:
    """Start the fakes, store the secrets, register the senders, switch the tenant live."""
    graph = stack.enter_context(running_fake_graph(token=ACCESS_TOKEN))
    moto_url = stack.enter_context(running_moto())
    aws = prepare_aws(moto_url)
    console.print(f"fake Graph API: {graph.url}; moto (Secrets Manager, SES v2): {moto_url}")
    console.print(
        f"secrets: {SECRETS_PATH}/tenants/{DEMO_TENANT}/whatsapp {{accessToken}}, "
        f"{SECRETS_PATH}/unsubscribe {{signingKey}}; SES identity {FROM_ADDRESS} verified, "
        f"configuration set {CONFIGURATION_SET}"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        for channel, sender, secret in (
            ("whatsapp", WHATSAPP_NUMBER_ID, aws.whatsapp_secret_arn),
            ("email", FROM_ADDRESS, None),
            ("calendar", FROM_ADDRESS, None),
        ):
            tenant_cli.upsert_sender(conn, DEMO_TENANT, channel, sender, secret_arn=secret)
        change = tenant_cli.set_mode(conn, DEMO_TENANT, "live")
    console.print(
        f"senders: whatsapp {WHATSAPP_NUMBER_ID} (its token's secret under "
        f"TENANT_SECRETS_PREFIX), email and calendar {FROM_ADDRESS}"
    )
    console.print(
        f"tenant {DEMO_TENANT}: dispatch_mode {change.old} → {change.new}, and "
        "MICRO_AGENT_DISPARO_ENABLED=true: this run is live"
    )
    scripted = []
    for lead in LEADS:
        if lead.whatsapp_error is not None:
            graph.script(lead.phone, error_code=lead.whatsapp_error)
            scripted.append(f"{mask_phone(lead.phone)} → {lead.whatsapp_error}")
    console.print(f"scripted Graph API errors: {', '.join(scripted)}")
    console.print(
        f"sandbox: {len(sandbox_recipients())} recipients in MICRO_AGENT_SANDBOX_RECIPIENTS "
        "(one lead's number left out on purpose)"
    )
    return World(graph, moto_url, aws)


def leads_table() -> Table:
    table = Table(title=f"The {len(LEADS)} demo leads and the rule each shows")
    for column in ("lead", "contact", "stage", "what it shows"):
        table.add_column(column)
    for lead in LEADS:
        table.add_row(escape(lead.name), lead.contact(None), lead.stage, escape(lead.story))
    return table


def print_run(console: Console, seen: Observed, world: World) -> None:
    """The invocation's summary, the ledger, what the providers received, the other rows."""
    by_id = {lead.lead_id: lead for lead in LEADS}
    summary = seen.response["summary"]
    console.print(
        f"summary: dryRun {str(seen.response['dryRun']).lower()}, sent {summary['sent']}, "
        f"failed {summary['failed']}, unknown {summary['unknown']}, skipped "
        f"{summary['skipped']}, deferred {summary['deferred']}; sent by channel "
        f"{json.dumps(summary['byChannel'])}"
    )
    console.print(decisions_table(seen.response, seen.ledger, by_id))
    decided = {d["leadId"] for d in seen.response["decisions"]}
    parked = [lead for lead in LEADS if lead.lead_id not in decided]
    if parked:
        console.print(
            "not taken (suppressed leads are parked, never decided): "
            + ", ".join(
                f"{escape(lead.name)} ({lead.stage}" + (", opted out)" if lead.opted_out else ")")
                for lead in parked
            )
        )
    console.print(graph_table(world.graph))
    console.print(ses_table(seen.ses, world.aws.signing_key))
    console.print(meetings_table(seen.meetings, by_id))
    for row in seen.opt_outs:
        lead = by_id.get(row["lead_id"])
        contact = lead.contact(row["channel"]) if lead else row["lead_id"]
        console.print(
            f"opt-out: {escape(lead.name if lead else '?')} ({contact}) on "
            f"{row['channel'] or 'every channel'}, source {row['source']}"
        )
    console.print(f"live_log rows of the run: {json.dumps(seen.live_log)}")
    console.print(
        "retries: a later run claims a retryable failure again after 5 min, then 30 min "
        "(3 attempts in all); an unknown one is never resent"
    )


def _by_lead(response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["leadId"]: d for d in response.get("decisions", [])}


def run_demo(console: Console, url: str, log_stream: IO[str]) -> int:
    """The demo against ``url``; 0 when every check passed."""
    real_now = datetime.now(UTC)
    start = demo_now(real_now)
    offset = start - real_now

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    with psycopg.connect(url, autocommit=True) as conn:
        try:
            applied = Runner(conn, default_migrations_dir()).apply()
        except MigrationError as exc:
            console.print(f"demo-live: cannot migrate the database: {escape(str(exc))}")
            return 2
        total = seed(conn, start)
    console.print(
        f"database: {len(applied.applied)} migration(s) applied, {applied.already_applied} "
        f"already there; tenant {DEMO_TENANT} started afresh with {total} leads"
    )
    if offset > timedelta(0):
        console.print(
            f"clock: São Paulo is in WhatsApp quiet hours now ({_local(real_now)}); the run's "
            f"clock is set to {_local(start)}, inside the next window"
        )
    check = Check()
    with contextlib.ExitStack() as stack:
        world = start_world(stack, console, url)
        console.print(leads_table())
        invoker = Invoker(log_stream, clock)
        stack.callback(invoker.close)
        stack.enter_context(
            patched_environ(function_environment(url, world.graph.url, world.moto_url, world.aws))
        )
        run_id = f"demo-live-{start:%Y%m%dT%H%M%S}"
        event = {"tenantId": DEMO_TENANT, "batchSize": BATCH_SIZE, "runId": run_id}
        console.print(f"invoking dry_run.handler with {json.dumps(event)}")
        response = invoker(event)
        if "error" in response:
            console.print(f"[red]handler error:[/red] {escape(str(response['error']))}")
            return 1
        seen = observe(url, response, world.graph)
        print_run(console, seen, world)
        check_decisions(check, seen)
        check_providers(check, seen, world.graph, world.aws.signing_key)

        replay = observe(url, invoker(event), world.graph)
        before = (seen.graph_requests, len(seen.ses))
        after = (replay.graph_requests, len(replay.ses))
        console.print(
            f"replay of run {run_id}: fake Graph API requests {before[0]} → {after[0]}, "
            f"SES messages {before[1]} → {after[1]}: "
            + ("no provider call" if after == before else "[red]providers called again[/red]")
        )
        check.expect(after == before, "the replay called a provider")
        check.expect(
            _by_lead(replay.response) == _by_lead(response),
            "the replay answered other decisions than the run",
        )
        check.expect(replay.ledger == seen.ledger, "the replay changed the dispatches ledger")

    for problem in check.problems:
        console.print(f"[red]MISMATCH[/red] {escape(problem)}")
    if check.problems:
        console.print(f"demo-live: FAILED, {len(check.problems)} mismatch(es)")
        return 1
    console.print(
        "demo-live: OK, every send recorded once as the rules predict; the replay called no "
        "provider"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 1 when anything differs from the prediction, 2 when it cannot run."""
    parser = argparse.ArgumentParser(prog="python -m devtools.demo_live", description=__doc__)
    parser.add_argument(
        "--logs", type=Path, default=LOG_FILE, help="append the function's log lines here"
    )
    args = parser.parse_args(argv)
    # Wide enough for the ledger table even when stdout is not a terminal (CI, pipes).
    console = Console(width=max(Console().width, 190), soft_wrap=True)
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        console.print("DATABASE_URL is not set: run this through `nox -s demo-live`.")
        return 2
    args.logs.parent.mkdir(parents=True, exist_ok=True)
    with args.logs.open("a", encoding="utf-8") as logs:
        code = run_demo(console, url, logs)
    console.print(f"function log lines (JSON, contacts masked): {args.logs}")
    return code


if __name__ == "__main__":
    sys.exit(main())
