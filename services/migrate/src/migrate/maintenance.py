"""Ledger maintenance: month partitions ahead of time, history past the retention removed.

Runs daily (the migrate Lambda's ``{"action": "maintain"}``, scheduled by the stack; locally
``python -m migrate maintain``). Nothing here blocks a run: a partition is added with CREATE +
ATTACH (SHARE UPDATE EXCLUSIVE on the parent), an old one leaves with DETACH ... CONCURRENTLY
and is then dropped alone; the session's lock timeout bounds any wait, and a step that times
out is simply done by the next day's run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg import sql

# Months of partitions kept ready ahead of today: inserts beyond them would fail, so a stopped
# schedule has this long before runs notice (the migrate function's errors alarm fires first).
MONTHS_AHEAD = 6
LOCK_TIMEOUT_MS = 3_000
_BOUND = re.compile(r"TO \('(?P<upper>\d{4}-\d{2}-\d{2})'\)")

# The partitioned ledgers (dry runs' and live mode's decision history), each with the function
# that adds its month partitions (migrations 0009 and 0013).
LEDGERS = (("dry_run_log", "dry_run_log_add_partition"), ("live_log", "live_log_add_partition"))
_PARTITIONS = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound, i.inhdetachpending
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = %s::regclass
ORDER BY c.relname
"""
# The rate caps read at most a day of send counts; older minutes go, a bounded batch at a time.
_DELETE_SEND_COUNTS = """
DELETE FROM send_counts WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM send_counts WHERE minute < %s LIMIT 10000))
"""
# Runs past the retention, a bounded batch at a time (row locks only).
_DELETE_RUNS = """
DELETE FROM runs WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM runs WHERE started_at < %s LIMIT 10000))
"""


@dataclass
class MaintenanceReport:
    """What one maintenance pass did."""

    retention_days: int
    cutoff: date
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    runs_deleted: int = 0
    send_counts_deleted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "retentionDays": self.retention_days,
            "cutoff": self.cutoff.isoformat(),
            "createdPartitions": self.created,
            "droppedPartitions": self.dropped,
            "runsDeleted": self.runs_deleted,
            "sendCountsDeleted": self.send_counts_deleted,
        }


def _month_starts(first: date, count: int) -> list[date]:
    months = []
    year, month = first.year, first.month
    for _ in range(count):
        months.append(date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def maintain(
    conn: psycopg.Connection[Any], *, retention_days: int, today: date
) -> MaintenanceReport:
    """Add the coming months' partitions and remove history older than ``retention_days``.

    ``conn`` must be in autocommit mode: DETACH ... CONCURRENTLY cannot run in a transaction.
    """
    if not conn.autocommit:
        raise ValueError("maintenance needs an autocommit connection")
    # Never wait long behind a run: a step that times out is done by the next day's pass.
    conn.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_MS)}".encode())
    cutoff = today - timedelta(days=retention_days)
    report = MaintenanceReport(retention_days, cutoff)
    for parent, add_partition in LEDGERS:
        _maintain_partitions(conn, parent, add_partition, today, report)
    report.runs_deleted = _delete_in_batches(conn, _DELETE_RUNS, cutoff)
    report.send_counts_deleted = _delete_in_batches(
        conn, _DELETE_SEND_COUNTS, today - timedelta(days=2)
    )
    return report


def _maintain_partitions(
    conn: psycopg.Connection[Any],
    parent: str,
    add_partition: str,
    today: date,
    report: MaintenanceReport,
) -> None:
    adder = sql.SQL("SELECT {}(%s)").format(sql.Identifier(add_partition))
    for month in _month_starts(today.replace(day=1), MONTHS_AHEAD + 1):
        row = conn.execute(adder, (month,)).fetchone()
        if row is not None and row[0] is not None:
            report.created.append(str(row[0]))
    for name, bound, detach_pending in conn.execute(_PARTITIONS.encode(), (parent,)).fetchall():
        match = _BOUND.search(bound or "")
        if match is None or date.fromisoformat(match["upper"]) > report.cutoff:
            continue
        table = sql.Identifier(name)
        finish = sql.SQL("FINALIZE") if detach_pending else sql.SQL("CONCURRENTLY")
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(
                sql.Identifier(parent), table, finish
            )
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(table))
        report.dropped.append(name)


def _delete_in_batches(conn: psycopg.Connection[Any], statement: str, before: date) -> int:
    total = 0
    while True:
        deleted = conn.execute(statement.encode(), (before,)).rowcount
        total += deleted
        if deleted < 10000:
            return total
