"""A stand-in for the Lambda context object, for invoking handlers in-process."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LocalLambdaContext:
    """The attributes Powertools and the handlers read from a real Lambda context."""

    function_name: str = "micro-agent-dry-run-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:000000000000:function:micro-agent-dry-run-local"
    )
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/micro-agent-dry-run-local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000
