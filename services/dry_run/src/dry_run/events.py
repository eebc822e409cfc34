"""The invocation event, parsed into a typed model; bad input becomes one readable line."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from dry_run.exceptions import InvalidEventError

TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MAX_BATCH_SIZE = 1000

# What each field expects, in the words the error message uses.
EXPECTED = {
    "tenantId": "a tenant id (1-64 letters, digits, '-' or '_')",
    "batchSize": f"an integer from 1 to {MAX_BATCH_SIZE}",
    "runId": "a run id (1-128 letters, digits, '.', ':', '-' or '_')",
}


class DryRunEvent(BaseModel):
    """``{"tenantId": str, "batchSize": int 1..1000, "runId": optional str}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    tenant_id: Annotated[StrictStr, Field(alias="tenantId", pattern=TENANT_ID_PATTERN)]
    batch_size: Annotated[StrictInt, Field(alias="batchSize", ge=1, le=MAX_BATCH_SIZE)]
    run_id: Annotated[StrictStr | None, Field(alias="runId", pattern=RUN_ID_PATTERN)] = None


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_event(raw: Any) -> DryRunEvent:
    """Validate an event; raise InvalidEventError naming the first bad field."""
    if not isinstance(raw, dict):
        raise InvalidEventError(
            "event",
            f"event: expected a JSON object with tenantId and batchSize, got {type(raw).__name__}",
        )
    try:
        return DryRunEvent.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "event"
        if error["type"] == "extra_forbidden":
            expected = ", ".join(EXPECTED)
            raise InvalidEventError(
                field, f"{field}: unexpected field; expected only {expected}"
            ) from None
        if error["type"] == "missing":
            raise InvalidEventError(
                field, f"{field}: missing; expected {EXPECTED[field]}"
            ) from None
        raise InvalidEventError(
            field,
            f"{field}: expected {EXPECTED.get(field, 'a valid value')}, "
            f"got {_describe(error.get('input'))}",
        ) from None
