"""Lambda entry point: parse the event, run the use case, log, emit metrics, answer.

Bad input answers ``{"error": {"type", "message"}}`` and is never raised (a raised error makes
Lambda retry an event that can never succeed). Infrastructure faults raise, so Lambda's retries
and on-failure destination take over; the use case commits nothing partial.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from dry_run.connection import ConnectionProvider
from dry_run.contacts import mask_email, mask_phone
from dry_run.events import InvalidEventError, parse_event
from dry_run.service import RunResult, decision_json, run_dry_run
from dry_run.settings import (
    DEFAULT_METRICS_NAMESPACE,
    DEFAULT_SERVICE_NAME,
    DISPATCH_FLAG,
    POWERTOOLS_METRICS_NAMESPACE,
    POWERTOOLS_SERVICE_NAME,
    dispatch_enabled,
)

SERVICE = os.environ.get(POWERTOOLS_SERVICE_NAME) or DEFAULT_SERVICE_NAME
NAMESPACE = os.environ.get(POWERTOOLS_METRICS_NAMESPACE) or DEFAULT_METRICS_NAMESPACE

logger = Logger(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=NAMESPACE)

_provider: ConnectionProvider | None = None


class LiveDispatchUnavailableError(RuntimeError):
    """The flag asks for live dispatch, which this build cannot do; nothing was touched."""


def _connections() -> ConnectionProvider:
    global _provider  # noqa: PLW0603 - one provider per container is the point
    if _provider is None:
        _provider = ConnectionProvider(os.environ)
    return _provider


def reset_connections() -> None:
    """Forget the cached connection and target (tests, and a changed environment)."""
    global _provider  # noqa: PLW0603
    if _provider is not None:
        _provider.close()
    _provider = None


def _error(exc: InvalidEventError) -> dict[str, Any]:
    metrics.add_metric(name="RejectedEvents", unit=MetricUnit.Count, value=1)
    logger.warning(
        "rejected event", extra={"errorType": exc.error_type, "field": exc.field, "error": str(exc)}
    )
    return {"error": {"type": exc.error_type, "message": str(exc)}}


def _recipient(result: RunResult, lead_id: str, channel: str | None) -> str | None:
    lead = result.leads.get(lead_id)
    if lead is None or channel is None:
        return None
    return mask_phone(lead.phone) if channel == "whatsapp" else mask_email(lead.email)


def _observe(result: RunResult) -> None:
    for decision in result.decisions:
        logger.info(
            "decision",
            extra={
                **decision_json(decision),
                "to": _recipient(result, decision.lead_id, decision.channel),
                "replayed": result.replayed,
            },
        )
    summary = result.summary()
    logger.info("summary", extra={"summary": summary, "replayed": result.replayed})
    if result.replayed:
        metrics.add_metric(name="ReplayedRuns", unit=MetricUnit.Count, value=1)
        return
    metrics.add_metric(name="LeadsDecided", unit=MetricUnit.Count, value=len(result.decisions))
    _emit_counts(
        "Decisions",
        ("channel", "action"),
        Counter((d.channel or "none", d.action) for d in result.decisions),
    )
    _emit_counts(
        "DecisionReasons",
        ("action", "reason"),
        Counter((d.action, d.reason) for d in result.decisions),
    )


def _emit_counts(name: str, dimensions: tuple[str, str], counts: Counter[tuple[str, str]]) -> None:
    """One EMF metric per combination of two dimensions (Powertools' single_metric)."""
    for values, value in sorted(counts.items()):
        with single_metric(
            name=name,
            unit=MetricUnit.Count,
            value=value,
            namespace=NAMESPACE,
            default_dimensions={"service": SERVICE},
        ) as metric:
            for dimension, dimension_value in zip(dimensions, values, strict=True):
                metric.add_dimension(name=dimension, value=dimension_value)


def handle(
    event: Any,
    context: Any,
    *,
    environ: Mapping[str, str],
    clock: Callable[[], datetime],
) -> dict[str, Any]:
    """The handler's logic with its environment and clock passed in."""
    try:
        request = parse_event(event)
    except InvalidEventError as exc:
        return _error(exc)
    run_id = request.run_id or str(context.aws_request_id)
    logger.append_keys(tenantId=request.tenant_id, runId=run_id)

    if dispatch_enabled(environ):
        metrics.add_metric(name="LiveModeRefused", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1)
        message = (
            f"{DISPATCH_FLAG} is 'true' but live senders are not deployed yet: refusing before "
            "touching any lead, nothing was sent or recorded; set it to 'false' or deploy senders"
        )
        logger.error(message)
        raise LiveDispatchUnavailableError(message)

    try:
        result = _connections().run(
            lambda conn: run_dry_run(
                conn,
                tenant_id=request.tenant_id,
                batch_size=request.batch_size,
                run_id=run_id,
                now=clock(),
            )
        )
    except InvalidEventError as exc:
        return _error(exc)
    except Exception:
        metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1)
        logger.exception("dry run failed; nothing was committed")
        raise
    _observe(result)
    return result.to_response()


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """AWS Lambda entry point (``dry_run.handler.lambda_handler``)."""
    return handle(event, context, environ=os.environ, clock=lambda: datetime.now(UTC))
