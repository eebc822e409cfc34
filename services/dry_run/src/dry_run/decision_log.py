"""The per-decision JSON log lines, in Powertools' shape, written with one write per batch.

Powertools' Logger formats each record through ``logging`` and flushes its stream after each
one: measured at ~270 µs a line, a 1,000-lead run spent 270 ms logging (two thirds of the
invocation) and made 1,000 write calls. The decision lines are uniform, so they are built here
from the logger's current keys (service, cold start, the Lambda context, tenantId, runId) with
``json.dumps`` and written to the logger's own stream at once; every other line still goes
through Powertools. Written by hand because no logging library batches records like this.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aws_lambda_powertools import Logger

LOCATION = "decision_log:write_decisions"


def _common_keys(logger: Logger) -> dict[str, Any]:
    """The logger's appended keys, without its per-record placeholders and empty values."""
    return {
        key: value
        for key, value in logger.get_current_keys().items()
        if value is not None and not (isinstance(value, str) and "%(" in value)
    }


def _timestamp() -> str:
    # Powertools' default: "%Y-%m-%d %H:%M:%S,<ms>%z", in UTC on Lambda.
    now = time.time()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + f",{int(now % 1 * 1000):03d}+0000"


def _line(prefix: str, decision: Mapping[str, Any]) -> str:
    body = json.dumps(decision, default=str)
    return f"{prefix}, {body[1:]}" if body != "{}" else f"{prefix}}}"


def write_decisions(logger: Logger, decisions: Iterable[Mapping[str, Any]]) -> int:
    """Write one ``"message": "decision"`` line per item; return how many were written."""
    if logger.log_level > logging.INFO:
        return 0
    head = {"level": "INFO", "location": LOCATION, "message": "decision", "timestamp": _timestamp()}
    common = {**head, **_common_keys(logger)}
    # The keys every line shares are serialised once; each line appends its decision's own
    # (their names never collide: a decision's are camelCase fields of the response).
    prefix = json.dumps(common, default=str)[:-1]
    lines = [_line(prefix, decision) for decision in decisions]
    if lines:
        stream = logger.registered_handler.stream  # type: ignore[attr-defined]
        stream.write("\n".join(lines) + "\n")
        stream.flush()
    return len(lines)
