"""The sweeper: claims no invocation can still answer become ``unknown`` (DOMAIN.md, "Live
sending", point 4).

A claim is committed before its provider call and answered by the same invocation's second
transaction. An invocation that died in between (timeout, crash, lost database) leaves its
claims ``claimed``; once they are older than the function's timeout (``CLAIM_EXPIRY_S``), none
can be answered any more, and the sweeper records them ``unknown``: the provider may have
accepted them, so they are never resent; the webhooks resolve them. Each swept claim also gets
its ``live_log`` row (reason ``claim_expired``), which its invocation never wrote.

Runs on a schedule in the stack (``dry_run.sweeper.lambda_handler``, every 5 minutes) and
locally as ``python -m dry_run.sweeper`` (``nox -s sweep``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from dry_run.settings import claim_expiry_s, metrics_namespace, service_name

# At most this many claims a statement (a backlog is swept in a few bounded statements).
BATCH = 1_000
SWEEPER_SERVICE = "micro-agent-sweeper"

# Expired claims become unknown and get their live_log row, in one statement. SKIP LOCKED: a
# claim being recorded right now by a (very late) invocation is left to it.
_SWEEP = """
WITH expired AS (
    SELECT id FROM dispatches
    WHERE status = 'claimed' AND claimed_at < %(before)s
    ORDER BY claimed_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), swept AS (
    UPDATE dispatches d
    SET status = 'unknown', error_code = 'claim_expired', updated_at = %(now)s
    FROM expired e
    WHERE d.id = e.id
    RETURNING d.run_id, d.tenant_id, d.lead_id, d.channel, d.dispatch_key, d.template,
              d.local_date, d.claimed_at
)
INSERT INTO live_log (run_id, tenant_id, lead_id, channel, action, reason, dispatch_key,
                      template, flag_enabled, decided_at, local_date, meeting_at, error_code)
SELECT coalesce(s.run_id, 'sweeper'), s.tenant_id, s.lead_id, s.channel, 'unknown',
       'claim_expired', s.dispatch_key, s.template, true, %(now)s,
       coalesce(s.local_date, (s.claimed_at AT TIME ZONE 'UTC')::date), m.starts_at,
       'claim_expired'
FROM swept s
LEFT JOIN meetings m ON m.dispatch_key = s.dispatch_key
ON CONFLICT DO NOTHING
RETURNING tenant_id
"""


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did."""

    swept: int
    by_tenant: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"claimsExpired": self.swept, "byTenant": dict(sorted(self.by_tenant.items()))}


def sweep(conn: psycopg.Connection[Any], *, expiry: timedelta, now: datetime) -> SweepReport:
    """Turn claims older than ``expiry`` into ``unknown``, a bounded batch per transaction."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    by_tenant: dict[str, int] = {}
    while True:
        with conn.transaction():
            rows = conn.execute(
                _SWEEP, {"before": now - expiry, "now": now, "batch": BATCH}
            ).fetchall()
        for (tenant,) in rows:
            by_tenant[tenant] = by_tenant.get(tenant, 0) + 1
        if len(rows) < BATCH:
            break
    return SweepReport(sum(by_tenant.values()), by_tenant)


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """AWS Lambda entry point (``dry_run.sweeper.lambda_handler``), on a schedule."""
    from aws_lambda_powertools import Logger, Metrics  # noqa: PLC0415
    from aws_lambda_powertools.metrics import MetricUnit  # noqa: PLC0415

    from dry_run.settings import Settings  # noqa: PLC0415
    from pgconn import Connector  # noqa: PLC0415

    del event, context
    environ = os.environ
    logger = Logger(service=service_name(environ))
    metrics = Metrics(service=service_name(environ), namespace=metrics_namespace(environ))
    settings = Settings.from_environ(environ)
    expiry = timedelta(seconds=claim_expiry_s(environ))
    connector = Connector(settings.database, application_name=SWEEPER_SERVICE)
    with connector.connect(autocommit=True) as conn:
        report = sweep(conn, expiry=expiry, now=datetime.now(UTC))
    metrics.add_metric(name="ClaimsExpired", unit=MetricUnit.Count, value=report.swept)
    if report.swept:
        logger.error(
            "claims expired without an answer: recorded unknown, never resent",
            extra=report.to_dict(),
        )
    metrics.flush_metrics()
    return report.to_dict()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dry_run.sweeper [--older-than SECONDS]`` against ``DATABASE_URL``."""
    parser = argparse.ArgumentParser(prog="python -m dry_run.sweeper", description=__doc__)
    parser.add_argument(
        "--older-than",
        type=int,
        default=claim_expiry_s(os.environ),
        help="sweep claims older than this many seconds (default: CLAIM_EXPIRY_S or 960)",
    )
    args = parser.parse_args(argv)
    if args.older_than < 1:
        parser.error("--older-than: expected a positive number of seconds")
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        print("DATABASE_URL is not set: point it at the database to sweep", file=sys.stderr)
        return 2
    with psycopg.connect(url, autocommit=True) as conn:
        report = sweep(conn, expiry=timedelta(seconds=args.older_than), now=datetime.now(UTC))
    print(f"swept {report.swept} expired claim(s) to unknown: {report.to_dict()['byTenant']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
