"""The environment variables the migration runner's Lambda reads (the Pulumi program sets them)."""

from __future__ import annotations

from collections.abc import Mapping

from pgconn import DB_HOST, DB_NAME, DB_SECRET_ARN

# Days of decision history (dry_run_log partitions, the run registry) that maintenance keeps.
LEDGER_RETENTION_DAYS = "LEDGER_RETENTION_DAYS"
DEFAULT_LEDGER_RETENTION_DAYS = 400

DEPLOYED_ENVIRONMENT = frozenset({DB_SECRET_ARN, DB_HOST, DB_NAME, LEDGER_RETENTION_DAYS})


class RetentionSettingError(ValueError):
    """LEDGER_RETENTION_DAYS is not a usable number of days."""


def retention_days(environ: Mapping[str, str]) -> int:
    """The configured retention, at least 35 days (one full month partition plus margin)."""
    raw = environ.get(LEDGER_RETENTION_DAYS, "").strip()
    if not raw:
        return DEFAULT_LEDGER_RETENTION_DAYS
    try:
        days = int(raw)
    except ValueError:
        days = 0
    if days < 35:
        raise RetentionSettingError(
            f"{LEDGER_RETENTION_DAYS}: expected a whole number of days >= 35, got {raw!r}"
        )
    return days
