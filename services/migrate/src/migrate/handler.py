"""Lambda handler: the Aurora migration runner that ``pulumi up`` invokes.

The event is ``{"action": "apply" | "status" | "validate" | "maintain"}`` (default ``apply``);
any other keys (the Pulumi program sends the migrations' content hash to force a new
invocation) are echoed back. ``maintain`` is the daily ledger maintenance (partitions ahead,
history past ``LEDGER_RETENTION_DAYS`` removed). The database secret comes from
``DB_SECRET_ARN`` and is fetched again if a connect fails (rotation). A refusal, a failed file
or drift raises, so the invocation fails and so does the ``pulumi up`` that ran it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from migrate.files import default_migrations_dir
from migrate.maintenance import maintain
from migrate.runner import Runner, SchemaDriftError
from migrate.settings import retention_days
from pgconn import Connector, DatabaseSettings

ACTIONS = ("apply", "status", "validate", "maintain")
# Lambda caps an invocation at 15 minutes; keep statements well inside it.
STATEMENT_TIMEOUT_MS = 13 * 60 * 1000


class InvalidMigrateEventError(ValueError):
    """The event does not name a known action."""


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Run the requested action and return a JSON report of what was done."""
    if event is None:
        event = {}
    if not isinstance(event, dict):
        raise InvalidMigrateEventError(f"event: expected a JSON object, got {type(event).__name__}")
    action = event.get("action", "apply")
    if action not in ACTIONS:
        raise InvalidMigrateEventError(
            f"action: expected one of {', '.join(ACTIONS)}, got {action!r}"
        )

    # No lock timeout: a migration may wait for locks (maintenance sets its own).
    settings = DatabaseSettings.from_environ(
        os.environ, statement_timeout_ms=STATEMENT_TIMEOUT_MS, lock_timeout_ms=0
    )
    # A bad retention setting is refused before connecting.
    days = retention_days(os.environ) if action == "maintain" else None
    connector = Connector(settings, application_name="micro-agent-migrate")
    with connector.connect(autocommit=True) as conn:
        runner = Runner(conn, default_migrations_dir(), lock_wait_s=120.0)
        report: dict[str, Any] = {"action": action, "target": connector.describe()}
        if action == "maintain":
            assert days is not None
            report |= maintain(conn, retention_days=days, today=datetime.now(UTC).date()).to_dict()
        elif action == "apply":
            report |= runner.apply().to_dict()
        elif action == "status":
            report["files"] = [
                {"version": row.version, "name": row.name, "state": row.state}
                for row in runner.status()
            ]
        else:
            problems = runner.validate()
            if problems:
                raise SchemaDriftError(problems)
            report["problems"] = []
    report["request"] = {key: value for key, value in event.items() if key != "action"}
    print(json.dumps({"message": "migrate report", **report}, default=str))
    return report
