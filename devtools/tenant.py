"""``nox -s tenant``: a tenant's live settings in the database: its mode, senders, paused channels.

    nox -s tenant -- mode TENANT dry_run|live
    nox -s tenant -- show TENANT
    nox -s tenant -- sender TENANT whatsapp PHONE_NUMBER_ID --secret-arn ARN
    nox -s tenant -- sender TENANT email|calendar ADDRESS [--configuration-set NAME]
    nox -s tenant -- resume TENANT CHANNEL

Works on ``DATABASE_URL`` (the nox session points it at the embedded PostgreSQL when unset).
A tenant sends for real only when its mode is ``live`` AND the stack's
``MICRO_AGENT_DISPARO_ENABLED`` is exactly ``true``; either one alone changes nothing. Bad
input is refused with one line naming the field and what was expected (exit 2), and changes
nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import psycopg
from psycopg.rows import dict_row

from dry_run.contacts import normalize_email
from dry_run.events import TENANT_ID_PATTERN
from dry_run.leads import DRY_RUN, LIVE
from dry_run.responses import RESPONSE_CHANNELS
from dry_run.senders.whatsapp import PHONE_NUMBER_ID
from dry_run.settings import DISPATCH_FLAG

PROG = "nox -s tenant --"
COMMANDS = ("mode", "show", "sender", "resume")
MODES = (DRY_RUN, LIVE)
CHANNELS: tuple[str, ...] = RESPONSE_CHANNELS
USAGE = (
    f"usage: {PROG} mode TENANT dry_run|live | show TENANT | "
    "sender TENANT whatsapp|email|calendar SENDER [--secret-arn ARN] "
    "[--configuration-set NAME] | resume TENANT whatsapp|email|calendar"
)
FLAG_REMINDER = (
    f"reminder: a live tenant sends only while the stack's {DISPATCH_FLAG} is exactly "
    '"true" (pulumi config disparoEnabled); with the flag off it keeps dry-running'
)
_SECRET_ARN = re.compile(
    r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}"
)
# SES configuration set names: letters, digits, '_' and '-', at most 64.
_CONFIGURATION_SET = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The tenants listed when an unknown id is given.
_LISTED_TENANTS = 10


class TenantCommandError(ValueError):
    """Bad input for a tenant command: one line naming the field and what was expected."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class ModeChange:
    """A tenant's dispatch_mode before and after."""

    tenant_id: str
    old: str
    new: str
    senders: tuple[str, ...]


@dataclass(frozen=True)
class SenderRow:
    """A tenant's sender on one channel, as ``tenant_senders`` holds it."""

    channel: str
    sender: str
    secret_arn: str | None
    configuration_set: str | None
    paused_at: datetime | None
    paused_reason: str | None


@dataclass(frozen=True)
class TenantView:
    """What ``show`` prints."""

    tenant_id: str
    name: str
    timezone: str
    dispatch_mode: str
    cooldown_hours: int
    meeting_minutes: int
    senders: tuple[SenderRow, ...]

    @property
    def paused(self) -> tuple[SenderRow, ...]:
        """The senders whose channel is paused."""
        return tuple(row for row in self.senders if row.paused_at is not None)


@dataclass(frozen=True)
class SenderChange:
    """A sender row before (None: new) and after an upsert."""

    tenant_id: str
    old: SenderRow | None
    new: SenderRow


def _check_tenant_id(tenant_id: str) -> None:
    if not re.fullmatch(TENANT_ID_PATTERN, tenant_id):
        raise TenantCommandError(
            "tenantId",
            f"expected a tenant id (1-64 letters, digits, '-' or '_'), got {tenant_id!r}",
        )


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise TenantCommandError(
            "channel", f"expected one of {', '.join(CHANNELS)}, got {channel!r}"
        )


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise TenantCommandError(
            "dispatch_mode", f"expected {' or '.join(MODES)} (exactly), got {mode!r}"
        )


def _lock_tenant_row(conn: psycopg.Connection[Any], tenant_id: str) -> dict[str, Any]:
    """The tenant's row, locked for the transaction; TenantCommandError when there is none."""
    _check_tenant_id(tenant_id)
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(
            "SELECT id, name, timezone, dispatch_mode, cooldown_hours, meeting_minutes "
            "FROM tenants WHERE id = %s FOR UPDATE",
            (tenant_id,),
        ).fetchone()
    if row is None:
        known = [
            str(item[0])
            for item in conn.execute(
                "SELECT id FROM tenants ORDER BY id LIMIT %s", (_LISTED_TENANTS + 1,)
            ).fetchall()
        ]
        listed = ", ".join(known[:_LISTED_TENANTS]) + (
            ", …" if len(known) > _LISTED_TENANTS else ""
        )
        raise TenantCommandError(
            "tenantId",
            f"no tenant {tenant_id!r} in this database; expected an existing tenant id"
            + (f" ({listed})" if known else " (there are none: seed one, e.g. nox -s demo)"),
        )
    return row


def _senders(conn: psycopg.Connection[Any], tenant_id: str) -> tuple[SenderRow, ...]:
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(
            "SELECT channel, sender, secret_arn, configuration_set, paused_at, paused_reason "
            "FROM tenant_senders WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchall()
    ordered = sorted(rows, key=lambda row: CHANNELS.index(row["channel"]))
    return tuple(SenderRow(**row) for row in ordered)


def set_mode(conn: psycopg.Connection[Any], tenant_id: str, mode: str) -> ModeChange:
    """Switch the tenant's ``dispatch_mode`` to ``mode`` (``dry_run`` or ``live``)."""
    _check_mode(mode)
    with conn.transaction():
        row = _lock_tenant_row(conn, tenant_id)
        conn.execute("UPDATE tenants SET dispatch_mode = %s WHERE id = %s", (mode, tenant_id))
        senders = tuple(row.channel for row in _senders(conn, tenant_id))
    return ModeChange(tenant_id, str(row["dispatch_mode"]), mode, senders)


def show(conn: psycopg.Connection[Any], tenant_id: str) -> TenantView:
    """The tenant's mode and senders (paused ones included)."""
    with conn.transaction():
        row = _lock_tenant_row(conn, tenant_id)
        senders = _senders(conn, tenant_id)
    return TenantView(
        tenant_id=str(row["id"]),
        name=str(row["name"]),
        timezone=str(row["timezone"]),
        dispatch_mode=str(row["dispatch_mode"]),
        cooldown_hours=int(row["cooldown_hours"]),
        meeting_minutes=int(row["meeting_minutes"]),
        senders=senders,
    )


def check_sender(
    channel: str, sender: str, secret_arn: str | None, configuration_set: str | None
) -> None:
    """Raise TenantCommandError unless the sender fits its channel (DOMAIN.md, tenant_senders)."""
    _check_channel(channel)
    if channel == "whatsapp":
        if not PHONE_NUMBER_ID.fullmatch(sender):
            raise TenantCommandError(
                "sender",
                "expected the WhatsApp business phone number id (digits only, from the "
                f"WhatsApp Manager), got {sender!r}",
            )
        if secret_arn is None:
            raise TenantCommandError(
                "--secret-arn",
                "missing; a whatsapp sender needs the ARN of its Secrets Manager secret "
                '{"accessToken": "…"} (under micro-agent/<stack>/tenants/)',
            )
        if not _SECRET_ARN.fullmatch(secret_arn):
            raise TenantCommandError(
                "--secret-arn",
                "expected a Secrets Manager secret ARN "
                f"(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME), got {secret_arn!r}",
            )
        if configuration_set is not None:
            raise TenantCommandError(
                "--configuration-set", "only an email or calendar sender has one; leave it out"
            )
        return
    if normalize_email(sender) is None or not sender.isascii():
        raise TenantCommandError(
            "sender",
            f"expected the verified From address of the {channel} channel (an ASCII email "
            f"address), got {sender!r}",
        )
    if secret_arn is not None:
        raise TenantCommandError(
            "--secret-arn", f"only a whatsapp sender has a secret; leave it out for {channel}"
        )
    if configuration_set is not None and not _CONFIGURATION_SET.fullmatch(configuration_set):
        raise TenantCommandError(
            "--configuration-set",
            f"expected an SES configuration set name (1-64 letters, digits, '_' or '-'), "
            f"got {configuration_set!r}",
        )


def upsert_sender(
    conn: psycopg.Connection[Any],
    tenant_id: str,
    channel: str,
    sender: str,
    *,
    secret_arn: str | None = None,
    configuration_set: str | None = None,
) -> SenderChange:
    """Create or replace the tenant's sender on a channel; a paused channel stays paused."""
    check_sender(channel, sender, secret_arn, configuration_set)
    with conn.transaction():
        _lock_tenant_row(conn, tenant_id)
        old = {row.channel: row for row in _senders(conn, tenant_id)}.get(channel)
        if channel == "whatsapp":
            owner = conn.execute(
                "SELECT tenant_id FROM tenant_senders "
                "WHERE channel = 'whatsapp' AND sender = %s AND tenant_id <> %s",
                (sender, tenant_id),
            ).fetchone()
            if owner is not None:
                raise TenantCommandError(
                    "sender",
                    f"WhatsApp number {sender} already belongs to tenant {owner[0]!r} (Meta's "
                    "webhooks name the number); expected a number of this tenant's own",
                )
        with conn.cursor(row_factory=dict_row) as cursor:
            new = cursor.execute(
                "INSERT INTO tenant_senders "
                "(tenant_id, channel, sender, secret_arn, configuration_set) "
                "VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant_id, channel) DO UPDATE SET sender = excluded.sender, "
                "secret_arn = excluded.secret_arn, configuration_set = excluded.configuration_set "
                "RETURNING channel, sender, secret_arn, configuration_set, paused_at, "
                "paused_reason",
                (tenant_id, channel, sender, secret_arn, configuration_set),
            ).fetchone()
    assert new is not None
    return SenderChange(tenant_id, old, SenderRow(**new))


def resume(conn: psycopg.Connection[Any], tenant_id: str, channel: str) -> SenderRow:
    """Clear a paused channel's ``paused_at``/``paused_reason``; the row as it was."""
    _check_channel(channel)
    with conn.transaction():
        _lock_tenant_row(conn, tenant_id)
        rows = {row.channel: row for row in _senders(conn, tenant_id)}
        old = rows.get(channel)
        if old is None:
            configured = ", ".join(rows) or "none yet"
            raise TenantCommandError(
                "channel",
                f"tenant {tenant_id!r} has no {channel} sender; expected one of its configured "
                f"channels ({configured})",
            )
        conn.execute(
            "UPDATE tenant_senders SET paused_at = NULL, paused_reason = NULL "
            "WHERE tenant_id = %s AND channel = %s",
            (tenant_id, channel),
        )
    return old


# --- the command line --------------------------------------------------------------------------


def _sender_text(row: SenderRow) -> str:
    parts = [row.sender]
    if row.secret_arn:
        parts.append(f"secret {row.secret_arn}")
    if row.configuration_set:
        parts.append(f"configuration set {row.configuration_set}")
    if row.paused_at is not None:
        since = row.paused_at.isoformat(timespec="seconds")
        parts.append(f"PAUSED since {since} ({row.paused_reason})")
    return ", ".join(parts)


def print_mode_change(change: ModeChange) -> None:
    """The change, old → new, and what else live needs."""
    verb = "unchanged" if change.old == change.new else "changed"
    print(f"tenant {change.tenant_id}: dispatch_mode {change.old} → {change.new} ({verb})")
    if change.new == DRY_RUN:
        print("dry_run: the tenant only rehearses (dry_run_log), whatever the stack's flag")
    if change.new == LIVE:
        print(FLAG_REMINDER)
        if not change.senders:
            print(
                "note: it has no sender yet, so every send is skipped sender_not_configured: "
                f"{PROG} sender {change.tenant_id} whatsapp|email|calendar SENDER ..."
            )


def print_view(view: TenantView) -> None:
    """The tenant's mode, senders and paused channels."""
    print(f"tenant {view.tenant_id} ({view.name}), timezone {view.timezone}")
    print(f"dispatch_mode: {view.dispatch_mode}")
    if view.dispatch_mode == LIVE:
        print(FLAG_REMINDER)
    print(f"cooldown_hours: {view.cooldown_hours}, meeting_minutes: {view.meeting_minutes}")
    if view.senders:
        print("senders:")
        for row in view.senders:
            print(f"  {row.channel:<9}{_sender_text(row)}")
    else:
        print("senders: none (a live run skips every send: sender_not_configured)")
    if view.paused:
        for row in view.paused:
            print(
                f"paused: {row.channel} ({row.paused_reason}); once fixed: "
                f"{PROG} resume {view.tenant_id} {row.channel}"
            )
    else:
        print("paused channels: none")


class _Parser(argparse.ArgumentParser):
    """argparse, with every error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}; {USAGE}", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    """The command line (choices are checked by the functions, so a bad one is one line)."""
    root = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = root.add_subparsers(dest="command", parser_class=_Parser)
    mode = sub.add_parser("mode", help="switch a tenant's dispatch_mode")
    mode.add_argument("tenant_id", metavar="TENANT")
    mode.add_argument("mode", metavar="dry_run|live")
    show_ = sub.add_parser("show", help="a tenant's mode, senders and paused channels")
    show_.add_argument("tenant_id", metavar="TENANT")
    sender = sub.add_parser("sender", help="create or replace a tenant's sender on a channel")
    sender.add_argument("tenant_id", metavar="TENANT")
    sender.add_argument("channel", metavar="whatsapp|email|calendar")
    sender.add_argument("sender", metavar="SENDER", help="phone number id, or From address")
    sender.add_argument("--secret-arn", help='whatsapp: the secret {"accessToken": ...}')
    sender.add_argument("--configuration-set", help="email, calendar: the SES configuration set")
    resume_ = sub.add_parser("resume", help="resume a channel a provider's answer paused")
    resume_.add_argument("tenant_id", metavar="TENANT")
    resume_.add_argument("channel", metavar="whatsapp|email|calendar")
    return root


def validate(args: argparse.Namespace) -> None:
    """Check the arguments before touching the database (TenantCommandError, one line)."""
    _check_tenant_id(args.tenant_id)
    if args.command == "mode":
        _check_mode(args.mode)
    if args.command == "sender":
        check_sender(args.channel, args.sender, args.secret_arn, args.configuration_set)
    if args.command == "resume":
        _check_channel(args.channel)


def run(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    """Carry out one parsed command and print what it did."""
    if args.command == "mode":
        print_mode_change(set_mode(conn, args.tenant_id, args.mode))
    elif args.command == "show":
        print_view(show(conn, args.tenant_id))
    elif args.command == "sender":
        change = upsert_sender(
            conn,
            args.tenant_id,
            args.channel,
            args.sender,
            secret_arn=args.secret_arn,
            configuration_set=args.configuration_set,
        )
        before = _sender_text(change.old) if change.old else "none"
        print(
            f"tenant {change.tenant_id} {change.new.channel} sender: {before} → "
            f"{_sender_text(change.new)}"
        )
        if change.new.paused_at is not None:
            print(f"still paused: {PROG} resume {change.tenant_id} {change.new.channel}")
    else:
        old = resume(conn, args.tenant_id, args.channel)
        if old.paused_at is None:
            print(f"tenant {args.tenant_id}: {args.channel} was not paused; nothing changed")
        else:
            print(
                f"tenant {args.tenant_id}: {args.channel} resumed (it was paused since "
                f"{old.paused_at.isoformat(timespec='seconds')}, {old.paused_reason})"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nox -s tenant``; 2 with one line on bad input."""
    args = parser().parse_args(argv)
    if args.command is None:
        print(USAGE, file=sys.stderr)
        return 2
    url = os.environ.get("DATABASE_URL", "").strip()
    try:
        validate(args)
        if not url:
            print("DATABASE_URL is not set: run this through `nox -s tenant`", file=sys.stderr)
            return 2
        with psycopg.connect(url, autocommit=True) as conn:
            run(conn, args)
    except TenantCommandError as exc:
        print(f"tenant: {exc}", file=sys.stderr)
        return 2
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        cause = str(exc).strip().splitlines()[0]
        print(
            f"tenant: the database is not migrated ({cause}): run nox -s migrate", file=sys.stderr
        )
        return 2
    except psycopg.OperationalError as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"tenant: cannot use DATABASE_URL: {cause}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
