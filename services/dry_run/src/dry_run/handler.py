"""Lambda entry point: parse the event, run the use case, log, emit metrics, answer.

Bad input answers ``{"error": {"type", "message"}}`` and is never raised (a raised error makes
Lambda retry an event that can never succeed). Infrastructure faults raise, so Lambda's retries
and on-failure destination take over; the use case commits nothing partial.
"""

from __future__ import annotations

import gc
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from dry_run import bootstrap
from dry_run.bootstrap import Dependencies
from dry_run.contacts import mask_email, mask_phone
from dry_run.decision_log import write_decisions
from dry_run.events import parse_event
from dry_run.exceptions import InvalidEventError
from dry_run.responses import RunResult
from dry_run.service import run_invocation
from dry_run.settings import Settings, metrics_namespace, service_name

# Module-level because Powertools' decorators need them at import: named from the same
# settings functions as Settings (which configure_metrics applies again once built).
logger = Logger(service=service_name(os.environ))
metrics = Metrics(service=service_name(os.environ), namespace=metrics_namespace(os.environ))

_dependencies: Dependencies | None = None


def dependencies() -> Dependencies:
    """The container's dependencies, built from the environment on first use."""
    global _dependencies  # noqa: PLW0603 - one graph per container is the point
    if _dependencies is None:
        _dependencies = bootstrap.build(os.environ)
        configure_metrics(_dependencies.settings)
        # What the cold start allocated (imports, this graph) lives as long as the container:
        # frozen out of the collector's sight, a full collection during a run does not walk it.
        gc.freeze()
    return _dependencies


def reset() -> None:
    """Forget the cached dependencies and close their connection (tests, a changed env)."""
    global _dependencies  # noqa: PLW0603
    if _dependencies is not None:
        _dependencies.close()
    _dependencies = None


def configure_metrics(settings: Settings) -> None:
    """Point the module's Metrics at the configured namespace and service."""
    metrics.namespace = settings.metrics_namespace
    metrics.service = settings.service_name


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


def _observe(result: RunResult, decisions: list[dict[str, Any]], settings: Settings) -> None:
    write_decisions(
        logger,
        (
            {
                **as_json,
                "to": _recipient(result, decision.lead_id, decision.channel),
                "replayed": result.replayed,
            }
            for decision, as_json in zip(result.decisions, decisions, strict=True)
        ),
    )
    summary = result.summary()
    logger.info("summary", extra={"summary": summary, "replayed": result.replayed})
    if result.replayed:
        metrics.add_metric(name="ReplayedRuns", unit=MetricUnit.Count, value=1)
        return
    metrics.add_metric(name="LeadsDecided", unit=MetricUnit.Count, value=len(result.decisions))
    if not result.dry_run:
        actions: Counter[str] = Counter(d.action for d in result.decisions)
        for action, name in (
            ("sent", "DispatchSent"),
            ("failed", "DispatchFailed"),
            ("unknown", "DispatchUnknown"),
        ):
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=actions[action])
        if result.paused_channels:
            metrics.add_metric(
                name="ChannelPaused", unit=MetricUnit.Count, value=len(result.paused_channels)
            )
            logger.error(
                "channel paused by the provider's answer; resume it once fixed",
                extra={"channels": list(result.paused_channels)},
            )
    _emit_counts(
        settings,
        "Decisions",
        ("channel", "action"),
        Counter((d.channel or "none", d.action) for d in result.decisions),
    )
    _emit_counts(
        settings,
        "DecisionReasons",
        ("action", "reason"),
        Counter((d.action, d.reason) for d in result.decisions),
    )


def _emit_counts(
    settings: Settings,
    name: str,
    dimensions: tuple[str, str],
    counts: Counter[tuple[str, str]],
) -> None:
    """One EMF metric per combination of two dimensions (Powertools' single_metric)."""
    for values, value in sorted(counts.items()):
        with single_metric(
            name=name,
            unit=MetricUnit.Count,
            value=value,
            namespace=settings.metrics_namespace,
            default_dimensions={"service": settings.service_name},
        ) as metric:
            for dimension, dimension_value in zip(dimensions, values, strict=True):
                metric.add_dimension(name=dimension, value=dimension_value)


def handle(
    event: Any,
    context: Any,
    *,
    deps: Dependencies,
    clock: Callable[[], datetime],
) -> dict[str, Any]:
    """The handler's logic with its dependencies and clock passed in.

    The clock is read twice: when the run takes its leads, and again once it holds the
    tenant's lock, so that every send committed before its decisions counts against the caps.
    """
    try:
        request = parse_event(event)
    except InvalidEventError as exc:
        return _error(exc)
    run_id = request.run_id or str(context.aws_request_id)
    logger.append_keys(tenantId=request.tenant_id, runId=run_id)

    remaining = getattr(context, "get_remaining_time_in_millis", None)
    try:
        result = deps.connections.run(
            lambda conn: run_invocation(
                conn,
                tenant_id=request.tenant_id,
                batch_size=request.batch_size,
                run_id=run_id,
                clock=clock,
                dispatch_enabled=deps.settings.dispatch_enabled,
                live_runtime=deps.live_runtime,
                remaining_s=None if remaining is None else lambda: remaining() / 1000,
            )
        )
    except InvalidEventError as exc:
        return _error(exc)
    except Exception:
        metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1)
        # A live run's claims are committed before any call: a fault after them leaves them
        # claimed (the sweeper makes them unknown), never sent twice; a retry replays.
        logger.exception("run failed; its open transaction was rolled back")
        raise
    decisions = result.decisions_json()
    _observe(result, decisions, deps.settings)
    return result.to_response(decisions)


def utc_now() -> datetime:
    """The function's clock."""
    return datetime.now(UTC)


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """AWS Lambda entry point (``dry_run.handler.lambda_handler``)."""
    return handle(event, context, deps=dependencies(), clock=utc_now)
