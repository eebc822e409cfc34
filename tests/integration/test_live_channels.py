"""Live runs on every channel, their gates and their meetings, end to end.

A real PostgreSQL, the fake Graph API on a socket for WhatsApp, and SES v2 on moto (in process)
for email and invitations, with botocore's Stubber where SES must answer an error. The senders
are wired by ``bootstrap.build_live_runtime`` from a settings dict, as in the Lambda.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email import message_from_string
from email.message import EmailMessage
from email.policy import default
from typing import TYPE_CHECKING, Any, LiteralString
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import boto3
import psycopg
import pytest
from botocore.stub import Stubber
from icalendar import Calendar
from moto import mock_aws
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID
from psycopg.rows import dict_row

from devtools.fake_graph import FakeGraph, running_fake_graph
from devtools.lambda_context import LocalLambdaContext
from dry_run import bootstrap, handler
from dry_run.bootstrap import Dependencies, build_live_runtime
from dry_run.live import LiveRuntime
from dry_run.responses import RunResult
from dry_run.senders.email import client_config
from dry_run.service import run_invocation
from dry_run.settings import Settings
from dry_run.unsubscribe import verify
from tests.support import insert_leads, insert_tenant

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Wednesday 25 Nov 2026, 12:00 in São Paulo.
NOON = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
SAO_PAULO = ZoneInfo("America/Sao_Paulo")
REGION = "us-east-1"
TENANT = "t-1"
NUMBER = "106540352242922"
TOKEN = "fake-token"
TENANT_SECRET = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:micro-agent/test/tenants/t-1"
UNSUBSCRIBE_SECRET = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:micro-agent/test/unsub"
SIGNING_KEY = "integration-signing-key-0123456789"
UNSUBSCRIBE_URL = "https://unsubscribe.example.com/u"
SENDER_DOMAIN = "acme.com.br"
FROM = f"vendas@{SENDER_DOMAIN}"
CONFIGURATION_SET = "tenant-t-1"
LEAD_PHONE = "+5511987654321"
LEAD_EMAIL = "lead@example.com"
# What the secrets hold (reading them from Secrets Manager is pgconn's, tested on its own).
SECRETS: dict[str, dict[str, str]] = {
    TENANT_SECRET: {"accessToken": TOKEN},
    UNSUBSCRIBE_SECRET: {"signingKey": SIGNING_KEY},
}


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    with running_fake_graph(token=TOKEN) as fake:
        yield fake


class Ses:
    """moto's SES v2 with the tenant's domain verified, and each SendEmail's arguments."""

    def __init__(self, client: SESV2Client) -> None:
        self.client = client
        self.requests: list[dict[str, Any]] = []
        # An observer on the real client: moto still receives and answers every call.
        client.meta.events.register("provide-client-params.sesv2.SendEmail", self._capture)

    def _capture(self, params: dict[str, Any], **_: Any) -> None:
        self.requests.append(dict(params))


@pytest.fixture
def ses(aws_env: None) -> Iterator[Ses]:
    with mock_aws():
        client = boto3.client("sesv2", region_name=REGION, config=client_config())
        client.create_email_identity(EmailIdentity=SENDER_DOMAIN)
        client.create_configuration_set(ConfigurationSetName=CONFIGURATION_SET)
        yield Ses(client)


@pytest.fixture
def stubbed(aws_env: None) -> Iterator[tuple[SESV2Client, Stubber]]:
    """A real SES v2 client whose answers come from a Stubber (nothing leaves the process)."""
    client = boto3.client("sesv2", region_name=REGION, config=client_config())
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def ses_messages() -> list[Any]:
    """Every message moto's SES accepted."""
    return list(get_backend("ses")[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


def received(message_id: str | None) -> EmailMessage:
    """The raw message moto's SES kept under ``message_id``, parsed."""
    (raw,) = [sent.raw_data for sent in ses_messages() if sent.id == message_id]
    message = message_from_string(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def environ(db: str, graph: FakeGraph, **extra: str) -> dict[str, str]:
    """The function's environment: live on, the fake Graph API, unsubscribe configured."""
    values = {
        "DATABASE_URL": db,
        "MICRO_AGENT_DISPARO_ENABLED": "true",
        "WHATSAPP_GRAPH_URL": graph.url,
        "UNSUBSCRIBE_URL": UNSUBSCRIBE_URL,
        "UNSUBSCRIBE_SECRET_ARN": UNSUBSCRIBE_SECRET,
    }
    values.update(extra)
    return values


def live_factory(ses_client_factory: Callable[[], Any]) -> Callable[[Settings], LiveRuntime]:
    """``build_live_runtime`` with the secrets above and the given SES client factory."""

    def build(settings: Settings) -> LiveRuntime:
        return build_live_runtime(
            settings,
            fetch_secret=SECRETS.__getitem__,
            ses_client_factory=ses_client_factory,
            clock=lambda: NOON,
        )

    return build


Runtimes = Callable[[dict[str, str], Any], LiveRuntime]


@pytest.fixture
def make_runtime() -> Iterator[Runtimes]:
    """Builds live runtimes from an environment and an SES client; closes them afterwards."""
    built: list[LiveRuntime] = []

    def make(env: dict[str, str], ses_client: Any) -> LiveRuntime:
        runtime = live_factory(lambda: ses_client)(Settings.from_environ(env))
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


def seed_tenant(
    db: str,
    *,
    senders: tuple[str, ...] = ("whatsapp", "email", "calendar"),
    mode: str = "live",
    limits: dict[str, tuple[int, int]] | None = None,
) -> None:
    with psycopg.connect(db) as conn:
        insert_tenant(conn, TENANT, limits=limits)
        conn.execute("UPDATE tenants SET dispatch_mode = %s WHERE id = %s", (mode, TENANT))
        for channel in senders:
            whatsapp = channel == "whatsapp"
            conn.execute(
                "INSERT INTO tenant_senders (tenant_id, channel, sender, secret_arn, "
                "configuration_set) VALUES (%s, %s, %s, %s, %s)",
                (
                    TENANT,
                    channel,
                    NUMBER if whatsapp else FROM,
                    TENANT_SECRET if whatsapp else None,
                    None if whatsapp else CONFIGURATION_SET,
                ),
            )


def add_leads(db: str, count: int = 1, **columns: Any) -> list[str]:
    columns.setdefault("email", LEAD_EMAIL)
    with psycopg.connect(db) as conn:
        return insert_leads(conn, TENANT, count, **columns)


def execute(db: str, query: LiteralString, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(db) as conn:
        conn.execute(query, params)


def fetch(db: str, query: LiteralString, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(db, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def invoke(
    db: str,
    runtime: LiveRuntime,
    *,
    run_id: str = "r-1",
    clock: Callable[[], datetime] = lambda: NOON,
    remaining_s: Callable[[], float] | None = None,
    batch_size: int = 50,
) -> RunResult:
    """One invocation with the flag on: live or shadow, as the tenant's mode says."""
    with psycopg.connect(db, autocommit=True) as conn:
        return run_invocation(
            conn,
            tenant_id=TENANT,
            batch_size=batch_size,
            run_id=run_id,
            clock=clock,
            dispatch_enabled=True,
            live_runtime=lambda: runtime,
            remaining_s=remaining_s,
        )


def outcomes(result: RunResult) -> list[tuple[str, str, str | None]]:
    return [(d.action, d.reason, d.channel) for d in result.decisions]


def slot(day: int, hour: int, minute: int = 0) -> datetime:
    """A wall time in São Paulo, November 2026."""
    return datetime(2026, 11, day, hour, minute, tzinfo=SAO_PAULO)


# --- email -----------------------------------------------------------------------------------


def test_an_email_goes_out_raw_with_a_working_one_click_unsubscribe(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN a live tenant with a verified From address, and a lead reachable by email only
    seed_tenant(migrated_db)
    (lead,) = add_leads(migrated_db, whatsapp_opt_in=False)
    runtime = make_runtime(environ(migrated_db, graph), ses.client)

    # WHEN a live run decides it
    result = invoke(migrated_db, runtime)

    # THEN SES received one raw message with a one-click unsubscribe for this tenant and lead
    (decision,) = result.decisions
    assert (decision.action, decision.channel, decision.template) == (
        "sent",
        "email",
        "email_first_touch_v1",
    )
    message = received(decision.provider_message_id)
    assert (message["From"], message["To"], message["Subject"]) == (
        FROM,
        LEAD_EMAIL,
        "Podemos ajudar, Lead?",
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = str(message["List-Unsubscribe"])
    assert link.startswith(f"<{UNSUBSCRIBE_URL}?")
    assert link.endswith(">")
    (token,) = parse_qs(urlsplit(link[1:-1]).query)["token"]
    assert verify(token, key=SIGNING_KEY.encode()) == (TENANT, lead, "email")
    assert graph.requests == []


def test_an_email_carries_its_dispatch_key_and_tenant_as_tags_in_its_configuration_set(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    seed_tenant(migrated_db)
    add_leads(migrated_db, whatsapp_opt_in=False)
    runtime = make_runtime(environ(migrated_db, graph), ses.client)

    result = invoke(migrated_db, runtime)

    (decision,) = result.decisions
    (request,) = ses.requests
    assert request["EmailTags"] == [
        {"Name": "dispatch_key", "Value": decision.dispatch_key},
        {"Name": "tenant_id", "Value": TENANT},
    ]
    assert request["ConfigurationSetName"] == CONFIGURATION_SET
    assert request["Destination"] == {"ToAddresses": [LEAD_EMAIL]}
    assert fetch(
        migrated_db, "SELECT status, provider_message_id, attempt, sent_at FROM dispatches"
    ) == [
        {
            "status": "sent",
            "provider_message_id": decision.provider_message_id,
            "attempt": 1,
            "sent_at": NOON,
        }
    ]
    assert [m.id for m in ses_messages()] == [decision.provider_message_id]


class OneClientFactory:
    """Makes the SES client; a first call waits a little for a concurrent second one."""

    def __init__(self, client: SESV2Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._second = threading.Event()
        self.calls = 0

    def __call__(self) -> SESV2Client:
        with self._lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            # Bounded: once the sender makes its client under a lock, no second call comes.
            self._second.wait(timeout=2.0)
        else:
            self._second.set()
        return self._client


def test_the_first_emails_of_a_container_share_one_ses_client(
    migrated_db: str, graph: FakeGraph, ses: Ses
) -> None:
    # GIVEN a new container (no SES client yet) and three emails sent at once
    seed_tenant(migrated_db)
    add_leads(migrated_db, 3, whatsapp_opt_in=False)
    factory = OneClientFactory(ses.client)
    runtime = live_factory(factory)(Settings.from_environ(environ(migrated_db, graph)))

    # WHEN a live run sends them
    try:
        result = invoke(migrated_db, runtime)
    finally:
        runtime.close()

    # THEN the client was made once: boto3's default session, which makes it in the Lambda,
    # is not safe to use from several threads at once
    assert [d.action for d in result.decisions] == ["sent"] * 3
    assert factory.calls == 1


def send_one_email_against(
    db: str,
    graph: FakeGraph,
    stubbed: tuple[SESV2Client, Stubber],
    make_runtime: Runtimes,
    *,
    code: str,
    http_status: int,
) -> tuple[str, RunResult]:
    """A live run of one email lead, SES answering its call with the error ``code``."""
    client, stubber = stubbed
    stubber.add_client_error(
        "send_email", service_error_code=code, service_message="no", http_status_code=http_status
    )
    seed_tenant(db)
    (lead,) = add_leads(db, whatsapp_opt_in=False)
    return lead, invoke(db, make_runtime(environ(db, graph), client))


def ledger_and_due(db: str, lead: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return (
        fetch(db, "SELECT status, error_code, retryable, retry_at, attempt FROM dispatches"),
        fetch(db, "SELECT due_at FROM lead_due WHERE lead_id = %s AND mode = 'live'", (lead,)),
    )


def test_ses_throttling_is_a_failure_retried_after_its_backoff(
    migrated_db: str,
    graph: FakeGraph,
    stubbed: tuple[SESV2Client, Stubber],
    make_runtime: Runtimes,
) -> None:
    # GIVEN SES answering 429 TooManyRequestsException
    # WHEN a live run sends one email
    lead, result = send_one_email_against(
        migrated_db, graph, stubbed, make_runtime, code="TooManyRequestsException", http_status=429
    )

    # THEN it failed, retryable after 5 minutes, when the lead is due again
    retry_at = NOON + timedelta(minutes=5)
    assert [(d.action, d.error_code) for d in result.decisions] == [
        ("failed", "TooManyRequestsException")
    ]
    assert ledger_and_due(migrated_db, lead) == (
        [
            {
                "status": "failed",
                "error_code": "TooManyRequestsException",
                "retryable": True,
                "retry_at": retry_at,
                "attempt": 1,
            }
        ],
        [{"due_at": retry_at}],
    )


def test_an_ses_rejection_is_a_failure_never_retried(
    migrated_db: str,
    graph: FakeGraph,
    stubbed: tuple[SESV2Client, Stubber],
    make_runtime: Runtimes,
) -> None:
    lead, result = send_one_email_against(
        migrated_db, graph, stubbed, make_runtime, code="MessageRejected", http_status=400
    )

    # THEN no retry: the lead was decided, so it is due again only after the tenant's cooldown
    # (72 h; later than its next local day, when its intent's key changes)
    assert [(d.action, d.error_code) for d in result.decisions] == [("failed", "MessageRejected")]
    assert ledger_and_due(migrated_db, lead) == (
        [
            {
                "status": "failed",
                "error_code": "MessageRejected",
                "retryable": False,
                "retry_at": None,
                "attempt": 1,
            }
        ],
        [{"due_at": NOON + timedelta(hours=72)}],
    )


# --- invitations and meetings ----------------------------------------------------------------


def calendar_part(message: EmailMessage) -> Calendar:
    (part,) = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    assert isinstance(part, EmailMessage)
    assert part.get_param("method") == "REQUEST"
    calendar = Calendar.from_ical(part.get_content())
    assert isinstance(calendar, Calendar)
    return calendar


def test_an_invitation_proposes_the_booked_slot_as_a_calendar_request(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN a lead who asked for a meeting
    seed_tenant(migrated_db)
    (lead,) = add_leads(migrated_db, stage="meeting_requested")
    runtime = make_runtime(environ(migrated_db, graph), ses.client)

    # WHEN a live run decides it
    response = invoke(migrated_db, runtime).to_response()

    # THEN the first free slot a day ahead is booked, and the invitation proposes exactly it
    (decision,) = response["decisions"]
    assert (decision["action"], decision["channel"]) == ("sent", "calendar")
    assert decision["meetingAt"] == "2026-11-26T12:00:00-03:00"
    (meeting,) = fetch(
        migrated_db,
        "SELECT lead_id::text AS lead_id, dispatch_key, starts_at, ends_at, status FROM meetings",
    )
    assert meeting == {
        "lead_id": lead,
        "dispatch_key": decision["dispatchKey"],
        "starts_at": datetime.fromisoformat(decision["meetingAt"]),
        "ends_at": datetime.fromisoformat(decision["meetingAt"]) + timedelta(minutes=30),
        "status": "booked",
    }
    calendar = calendar_part(received(decision["providerMessageId"]))
    assert calendar["METHOD"] == "REQUEST"
    (event,) = calendar.events
    assert str(event["UID"]) == f"{decision['dispatchKey']}@{SENDER_DOMAIN}"
    assert (event.start, event.end) == (meeting["starts_at"], meeting["ends_at"])
    assert str(event["ATTENDEE"]) == f"mailto:{LEAD_EMAIL}"
    assert event["ATTENDEE"].params["RSVP"] == "TRUE"


def test_a_dry_run_proposes_the_slots_a_live_run_of_the_same_data_books(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN a tenant rehearsing (flag on, mode dry_run) with four meeting requests
    seed_tenant(migrated_db, mode="dry_run")
    add_leads(migrated_db, 4, stage="meeting_requested")
    runtime = make_runtime(environ(migrated_db, graph), ses.client)

    # WHEN it rehearses, then goes live on the same leads at the same instant
    rehearsal = invoke(migrated_db, runtime, run_id="shadow-1").to_response()
    execute(migrated_db, "UPDATE tenants SET dispatch_mode = 'live'")
    live = invoke(migrated_db, runtime, run_id="live-1")

    # THEN the live run books, lead by lead, the slots the dry run predicted
    assert rehearsal["dryRun"] is True
    proposed = {d["leadId"]: datetime.fromisoformat(d["meetingAt"]) for d in rehearsal["decisions"]}
    booked = {
        row["lead_id"]: row["starts_at"]
        for row in fetch(
            migrated_db,
            "SELECT lead_id::text AS lead_id, starts_at FROM meetings WHERE status = 'booked'",
        )
    }
    assert [d.action for d in live.decisions] == ["sent"] * 4
    assert booked == proposed
    assert sorted(booked.values()) == [
        slot(26, 12),
        slot(26, 12, 30),
        slot(26, 13),
        slot(26, 13, 30),
    ]


def test_a_second_dry_run_proposes_slots_the_first_did_not(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN a dry run that proposed three slots
    seed_tenant(migrated_db, mode="dry_run")
    add_leads(migrated_db, 3, stage="meeting_requested")
    runtime = make_runtime(environ(migrated_db, graph), ses.client)
    first = invoke(migrated_db, runtime, run_id="dry-1")

    # WHEN three more leads ask for a meeting and the next dry run decides them
    later = add_leads(migrated_db, 3, stage="meeting_requested")
    second = invoke(migrated_db, runtime, run_id="dry-2")

    # THEN the earlier proposals count as taken: the next three slots are proposed
    assert [d.lead_id for d in second.decisions] == later
    assert [d.meeting_at for d in first.decisions] == [slot(26, 12), slot(26, 12, 30), slot(26, 13)]
    assert [d.meeting_at for d in second.decisions] == [
        slot(26, 13, 30),
        slot(26, 14),
        slot(26, 14, 30),
    ]


def test_overlapping_live_runs_never_book_one_slot_twice(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN eight meeting requests and two invocations of four, started together
    seed_tenant(migrated_db)
    add_leads(migrated_db, 8, stage="meeting_requested")
    runtime = make_runtime(environ(migrated_db, graph), ses.client)
    barrier = threading.Barrier(2)

    def one(run_id: str) -> RunResult:
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            conn.execute("SELECT 1")
            barrier.wait(timeout=30)
            return run_invocation(
                conn,
                tenant_id=TENANT,
                batch_size=4,
                run_id=run_id,
                clock=lambda: NOON,
                dispatch_enabled=True,
                live_runtime=lambda: runtime,
            )

    # WHEN they run at once, each on its own connection
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, ["r-a", "r-b"]))

    # THEN every lead got its own slot, and each slot is booked once
    assert [[d.action for d in r.decisions] for r in results] == [["sent"] * 4] * 2
    rows = fetch(migrated_db, "SELECT lead_id, starts_at, status FROM meetings")
    assert len(rows) == 8
    assert {row["status"] for row in rows} == {"booked"}
    assert len({row["starts_at"] for row in rows}) == 8
    assert len({row["lead_id"] for row in rows}) == 8
    assert len(ses_messages()) == 8


def test_a_rejected_invitation_fails_and_frees_its_slot(
    migrated_db: str,
    graph: FakeGraph,
    stubbed: tuple[SESV2Client, Stubber],
    make_runtime: Runtimes,
) -> None:
    # GIVEN SES rejecting the first invitation and accepting the next
    client, stubber = stubbed
    stubber.add_client_error(
        "send_email",
        service_error_code="MessageRejected",
        service_message="Email address is not verified.",
        http_status_code=400,
    )
    stubber.add_response("send_email", {"MessageId": "0100-second"})
    seed_tenant(migrated_db)
    (first,) = add_leads(migrated_db, stage="meeting_requested")
    runtime = make_runtime(environ(migrated_db, graph), client)

    # WHEN a live run invites one lead, and a later run another
    rejected = invoke(migrated_db, runtime, run_id="r-1")
    (second,) = add_leads(migrated_db, stage="meeting_requested")
    accepted = invoke(migrated_db, runtime, run_id="r-2")

    # THEN the rejection is a permanent failure whose meeting is cancelled, freeing its slot
    assert [(d.lead_id, d.action, d.error_code) for d in rejected.decisions] == [
        (first, "failed", "MessageRejected")
    ]
    # (and the failed decision proposes no meeting any more, in the response or the log)
    assert [d.meeting_at for d in rejected.decisions] == [None]
    assert fetch(migrated_db, "SELECT meeting_at FROM live_log WHERE lead_id = %s", (first,)) == [
        {"meeting_at": None}
    ]
    assert fetch(
        migrated_db, "SELECT status, retryable FROM dispatches WHERE lead_id = %s", (first,)
    ) == [{"status": "failed", "retryable": False}]
    assert [(d.lead_id, d.action) for d in accepted.decisions] == [(second, "sent")]
    assert fetch(
        migrated_db,
        "SELECT lead_id::text AS lead_id, starts_at, status FROM meetings ORDER BY id",
    ) == [
        {"lead_id": first, "starts_at": slot(26, 12), "status": "cancelled"},
        {"lead_id": second, "starts_at": slot(26, 12), "status": "booked"},
    ]


# --- the live gates, end to end --------------------------------------------------------------


def test_without_unsubscribe_settings_no_email_or_invitation_is_sent(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN no UNSUBSCRIBE_URL nor its secret, and an email, an invitation and a WhatsApp lead
    seed_tenant(migrated_db)
    add_leads(migrated_db, whatsapp_opt_in=False)
    add_leads(migrated_db, stage="meeting_requested")
    add_leads(migrated_db)
    env = environ(migrated_db, graph, UNSUBSCRIBE_URL="", UNSUBSCRIBE_SECRET_ARN="")
    runtime = make_runtime(env, ses.client)

    # WHEN a live run decides them
    result = invoke(migrated_db, runtime)

    # THEN email and invitations are skipped and SES never called; WhatsApp is not affected
    assert outcomes(result) == [
        ("skipped", "unsubscribe_not_configured", "email"),
        ("skipped", "unsubscribe_not_configured", "calendar"),
        ("sent", "whatsapp_template", "whatsapp"),
    ]
    assert ses.requests == []
    assert ses_messages() == []
    assert fetch(migrated_db, "SELECT channel FROM dispatches") == [{"channel": "whatsapp"}]
    assert fetch(migrated_db, "SELECT id FROM meetings") == []


def test_a_sandbox_lets_through_only_its_recipients_in_normal_form(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN a sandbox written loosely: a phone with separators, an email with an upper-case domain
    seed_tenant(migrated_db)
    add_leads(migrated_db, phone=LEAD_PHONE)
    add_leads(migrated_db, phone="+5511912345678")
    add_leads(migrated_db, whatsapp_opt_in=False, email=LEAD_EMAIL)
    add_leads(migrated_db, whatsapp_opt_in=False, email="someone.else@example.com")
    env = environ(
        migrated_db, graph, MICRO_AGENT_SANDBOX_RECIPIENTS="+55 (11) 98765-4321, lead@EXAMPLE.com"
    )
    runtime = make_runtime(env, ses.client)

    # WHEN a live run decides the four leads
    result = invoke(migrated_db, runtime)

    # THEN only the sandbox's recipients are contacted
    assert outcomes(result) == [
        ("sent", "whatsapp_template", "whatsapp"),
        ("skipped", "sandbox_blocked", "whatsapp"),
        ("sent", "email_opt_in", "email"),
        ("skipped", "sandbox_blocked", "email"),
    ]
    assert [r.recipient for r in graph.requests] == [LEAD_PHONE]
    assert [r["Destination"]["ToAddresses"] for r in ses.requests] == [[LEAD_EMAIL]]


def test_a_sandbox_email_matches_whatever_the_case_of_its_local_part(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN a sandbox naming the lead's address with capitals (DOMAIN.md: emails are compared
    # lower-case)
    seed_tenant(migrated_db)
    add_leads(migrated_db, whatsapp_opt_in=False, email=LEAD_EMAIL)
    env = environ(migrated_db, graph, MICRO_AGENT_SANDBOX_RECIPIENTS="Lead@Example.com")
    runtime = make_runtime(env, ses.client)

    # WHEN a live run decides the lead
    result = invoke(migrated_db, runtime)

    # THEN it is the sandbox's recipient: the email is sent
    assert outcomes(result) == [("sent", "email_opt_in", "email")]


def test_a_channel_without_a_sender_is_skipped_without_trying_another(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN a tenant with email senders only, and a lead reachable on WhatsApp and by email
    seed_tenant(migrated_db, senders=("email", "calendar"))
    add_leads(migrated_db)
    runtime = make_runtime(environ(migrated_db, graph), ses.client)

    result = invoke(migrated_db, runtime)

    # THEN WhatsApp is skipped and no email goes out instead
    assert outcomes(result) == [("skipped", "sender_not_configured", "whatsapp")]
    assert graph.requests == []
    assert ses.requests == []
    assert fetch(migrated_db, "SELECT id FROM dispatches") == []


# --- WhatsApp: a paused channel, and content as data -----------------------------------------


@pytest.fixture
def clean_handler() -> Iterator[None]:
    handler.reset()
    handler.metrics.clear_metrics()
    yield
    handler.metrics.clear_metrics()
    handler.reset()


def build_deps(env: dict[str, str], ses_client: Any) -> Dependencies:
    deps = bootstrap.build(env)
    deps.live_factory = live_factory(lambda: ses_client)
    return deps


def metric_total(text: str, name: str) -> float:
    """The sum of a metric over the EMF lines of ``text``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        data = json.loads(line)
        if "_aws" not in data:
            continue
        value = data.get(name, 0)
        total += sum(value) if isinstance(value, list) else float(value)
    return total


@pytest.mark.usefixtures("clean_handler")
def test_a_spam_limit_answer_pauses_whatsapp_and_later_runs_send_nothing_there(
    migrated_db: str, graph: FakeGraph, ses: Ses, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN Meta answering 131048 (spam rate limit) for every message
    seed_tenant(migrated_db)
    add_leads(migrated_db, 2)
    graph.script(error_code=131048)
    deps = build_deps(environ(migrated_db, graph), ses.client)
    try:
        # WHEN a run sends, and a later run (Meta answering normally again) has new leads
        first = handler.handle(
            {"tenantId": TENANT, "batchSize": 10, "runId": "r-1"},
            LocalLambdaContext(),
            deps=deps,
            clock=lambda: NOON,
        )
        handler.metrics.flush_metrics()
        emitted = capsys.readouterr().out
        graph.clear_scripts()
        calls = len(graph.requests)
        add_leads(migrated_db, 2)
        later = handler.handle(
            {"tenantId": TENANT, "batchSize": 10, "runId": "r-2"},
            LocalLambdaContext(),
            deps=deps,
            clock=lambda: NOON + timedelta(minutes=10),
        )
    finally:
        deps.close()

    # THEN the sends failed, the channel is paused and said so, and nothing more was sent there
    assert [(d["action"], d["errorCode"]) for d in first["decisions"]] == [("failed", "131048")] * 2
    assert metric_total(emitted, "ChannelPaused") == 1
    assert metric_total(emitted, "DispatchFailed") == 2
    assert fetch(
        migrated_db,
        "SELECT paused_at, paused_reason FROM tenant_senders WHERE channel = 'whatsapp'",
    ) == [{"paused_at": NOON, "paused_reason": "131048"}]
    assert [(d["action"], d["reason"], d["channel"]) for d in later["decisions"]] == [
        ("skipped", "channel_paused", "whatsapp")
    ] * 2
    assert len(graph.requests) == calls == 2


def test_a_send_without_content_fails_as_template_missing_without_a_call(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN the default content of first_touch_v1 deleted
    execute(migrated_db, "DELETE FROM message_templates WHERE template = 'first_touch_v1'")
    seed_tenant(migrated_db)
    add_leads(migrated_db)
    runtime = make_runtime(environ(migrated_db, graph), ses.client)

    result = invoke(migrated_db, runtime)

    assert [(d.action, d.error_code) for d in result.decisions] == [("failed", "template_missing")]
    assert graph.requests == []
    assert fetch(migrated_db, "SELECT status, error_code, retryable FROM dispatches") == [
        {"status": "failed", "error_code": "template_missing", "retryable": False}
    ]


def test_a_tenants_own_content_overrides_the_default(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN the tenant's own first_touch_v1: another language and other parameters
    seed_tenant(migrated_db)
    execute(
        migrated_db,
        "INSERT INTO message_templates (tenant_id, template, channel, language, body, parameters) "
        "VALUES (%s, 'first_touch_v1', 'whatsapp', 'en_US', 'Hi {first_name}', %s)",
        (TENANT, '["Hi {first_name}", "see you"]'),
    )
    add_leads(migrated_db)
    runtime = make_runtime(environ(migrated_db, graph), ses.client)

    result = invoke(migrated_db, runtime)

    # THEN Meta receives the template under its name, in the tenant's language and parameters
    (decision,) = result.decisions
    (request,) = graph.requests
    assert request.path == f"/v21.0/{NUMBER}/messages"
    assert request.json["template"] == {
        "name": "first_touch_v1",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Hi Lead"},
                    {"type": "text", "text": "see you"},
                ],
            }
        ],
    }
    assert request.json["biz_opaque_callback_data"] == decision.dispatch_key


# --- the clock and the time budget at the moment of sending ----------------------------------


class ClockTurningAtTheClaim:
    """20:59:59 in São Paulo until the run's claim is committed, 21:00:01 from then on.

    It looks at the ledger from its own connection, so it turns exactly between the decision
    (inside WhatsApp's window) and the send (outside it), however often the run reads it.
    """

    BEFORE = datetime(2026, 11, 25, 20, 59, 59, tzinfo=SAO_PAULO)
    AFTER = datetime(2026, 11, 25, 21, 0, 1, tzinfo=SAO_PAULO)

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self.turned = False

    def __call__(self) -> datetime:
        with self._lock:
            if not self.turned:
                with psycopg.connect(self._url) as conn:
                    row = conn.execute("SELECT count(*) FROM dispatches").fetchone()
                self.turned = row is not None and row[0] > 0
            return self.AFTER if self.turned else self.BEFORE


def test_quiet_hours_beginning_between_claim_and_send_release_the_claim(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN a WhatsApp lead decided at 20:59:59 and a send that would start at 21:00:01
    seed_tenant(migrated_db)
    (lead,) = add_leads(migrated_db)
    runtime = make_runtime(environ(migrated_db, graph), ses.client)
    clock = ClockTurningAtTheClaim(migrated_db)

    # WHEN the live run claims and then reaches the send
    result = invoke(migrated_db, runtime, clock=clock)

    # THEN nothing is sent, the claim is gone, and the lead waits for Thursday 09:00
    opens_at = slot(26, 9)
    assert clock.turned
    assert [(d.action, d.reason, d.not_before, d.dispatch_key) for d in result.decisions] == [
        ("deferred", "quiet_hours", opens_at, None)
    ]
    assert graph.requests == []
    assert fetch(migrated_db, "SELECT id FROM dispatches") == []
    assert fetch(
        migrated_db,
        "SELECT due_at, ready FROM lead_due WHERE lead_id = %s AND mode = 'live'",
        (lead,),
    ) == [{"due_at": opens_at, "ready": False}]
    assert fetch(migrated_db, "SELECT action, reason FROM live_log") == [
        {"action": "deferred", "reason": "quiet_hours"}
    ]


def test_too_little_time_left_claims_nothing(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN an invocation with 10 s left: less than one call's timeout and its recording
    seed_tenant(migrated_db)
    add_leads(migrated_db, 2)
    add_leads(migrated_db, whatsapp_opt_in=False)
    runtime = make_runtime(environ(migrated_db, graph), ses.client)

    result = invoke(migrated_db, runtime, remaining_s=lambda: 10.0)

    # THEN every send is deferred to now, with no claim and no call
    assert [(d.action, d.reason, d.not_before) for d in result.decisions] == [
        ("deferred", "time_budget", NOON)
    ] * 3
    assert fetch(migrated_db, "SELECT id FROM dispatches") == []
    assert fetch(migrated_db, "SELECT sends FROM send_counts WHERE sends > 0") == []
    assert graph.requests == []
    assert ses.requests == []


def test_time_running_out_during_sending_releases_the_later_sends(
    migrated_db: str, graph: FakeGraph, ses: Ses, make_runtime: Runtimes
) -> None:
    # GIVEN one send at a time, and time that runs out once two calls are made
    seed_tenant(migrated_db)
    leads = add_leads(migrated_db, 4)
    runtime = make_runtime(environ(migrated_db, graph, SEND_CONCURRENCY="1"), ses.client)

    def remaining_s() -> float:
        return 300.0 if len(graph.requests) < 2 else 10.0

    # WHEN the run sends, and a later invocation with time runs
    result = invoke(migrated_db, runtime, remaining_s=remaining_s)
    sent_rows = fetch(migrated_db, "SELECT lead_id::text AS lead_id, status FROM dispatches")
    later = invoke(migrated_db, runtime, run_id="r-2", clock=lambda: NOON + timedelta(minutes=1))

    # THEN the first two are sent, the other two released without a call, and sent next time
    assert [(d.action, d.reason) for d in result.decisions] == [
        ("sent", "whatsapp_template"),
        ("sent", "whatsapp_template"),
        ("deferred", "time_budget"),
        ("deferred", "time_budget"),
    ]
    assert sorted((r["lead_id"], r["status"]) for r in sent_rows) == sorted(
        [(leads[0], "sent"), (leads[1], "sent")]
    )
    assert [(d.lead_id, d.action) for d in later.decisions] == [
        (leads[2], "sent"),
        (leads[3], "sent"),
    ]
    assert len(graph.requests) == 4


# --- the live response -----------------------------------------------------------------------


@pytest.mark.usefixtures("clean_handler")
def test_the_live_response_reports_each_outcome_and_counts_what_was_sent(
    migrated_db: str, graph: FakeGraph, ses: Ses
) -> None:
    # GIVEN WhatsApp capped at 3 an hour, and leads whose sends end each way
    seed_tenant(migrated_db, limits={"whatsapp": (3, 100)})
    add_leads(migrated_db, phone="+5511987650001")  # accepted
    add_leads(migrated_db, phone="+5511987650002")  # rejected (re-engagement)
    add_leads(migrated_db, phone="+5511987650003")  # connection reset: unknown
    add_leads(migrated_db, whatsapp_opt_in=False)  # email, accepted
    add_leads(migrated_db, whatsapp_opt_in=False, email_opt_in=False)  # nowhere to go
    add_leads(migrated_db, phone="+5511987650006")  # over the cap
    graph.script("+5511987650002", error_code=131047)
    graph.script("+5511987650003", drop="reset")
    deps = build_deps(environ(migrated_db, graph), ses.client)
    try:
        # WHEN the handler runs them live
        response = handler.handle(
            {"tenantId": TENANT, "batchSize": 10, "runId": "r-1"},
            LocalLambdaContext(),
            deps=deps,
            clock=lambda: NOON,
        )
    finally:
        deps.close()

    # THEN the response is live, each send says how it ended, and the summary counts them
    assert (response["runId"], response["tenantId"], response["dryRun"]) == ("r-1", TENANT, False)
    decisions = response["decisions"]
    assert [(d["action"], d["reason"], d["channel"]) for d in decisions] == [
        ("sent", "whatsapp_template", "whatsapp"),
        ("failed", "whatsapp_template", "whatsapp"),
        ("unknown", "whatsapp_template", "whatsapp"),
        ("sent", "email_opt_in", "email"),
        ("skipped", "no_eligible_channel", None),
        ("deferred", "rate_limited", "whatsapp"),
    ]
    assert decisions[0]["providerMessageId"] == graph.message_ids[0]
    assert decisions[3]["providerMessageId"] == ses_messages()[0].id
    assert decisions[1]["errorCode"] == "131047"
    assert "providerMessageId" not in decisions[1]
    assert all(d["dispatchKey"] for d in decisions[:4])
    summary = response["summary"]
    assert "would_send" not in summary
    assert {k: summary[k] for k in ("sent", "failed", "unknown", "skipped", "deferred")} == {
        "sent": 2,
        "failed": 1,
        "unknown": 1,
        "skipped": 1,
        "deferred": 1,
    }
    assert summary["byChannel"] == {"whatsapp": 1, "email": 1, "calendar": 0}
