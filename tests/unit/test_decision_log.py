"""The batched decision log lines: Powertools' shape, one write, the logger's level honoured."""

from __future__ import annotations

import io
import json
import uuid

from aws_lambda_powertools import Logger

from dry_run.decision_log import write_decisions


def _logger(level: str) -> tuple[Logger, io.StringIO]:
    stream = io.StringIO()
    # Powertools configures the named logging.Logger once per service name: one name a test.
    logger = Logger(service=f"svc-{uuid.uuid4().hex[:8]}", level=level, stream=stream)
    logger.append_keys(tenantId="t-1", runId="r-1")
    return logger, stream


def test_each_decision_is_one_json_line_with_the_loggers_keys() -> None:
    logger, stream = _logger("INFO")

    written = write_decisions(logger, [{"leadId": "a", "to": "+55*******4321"}, {"leadId": "b"}])

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert written == 2
    assert [line["leadId"] for line in lines] == ["a", "b"]
    assert all(line["message"] == "decision" and line["level"] == "INFO" for line in lines)
    assert all(line["service"] == logger.service for line in lines)
    assert all((line["tenantId"], line["runId"]) == ("t-1", "r-1") for line in lines)
    assert all("%(" not in json.dumps(line) for line in lines)


def test_nothing_is_written_when_the_level_is_above_info() -> None:
    logger, stream = _logger("WARNING")

    written = write_decisions(logger, [{"leadId": "a"}])

    assert written == 0
    assert stream.getvalue() == ""


def test_an_empty_decision_still_makes_a_valid_line() -> None:
    logger, stream = _logger("INFO")

    write_decisions(logger, [{}])

    assert json.loads(stream.getvalue())["message"] == "decision"
