"""``nox -s invoke`` and ``nox -s logs``: talk to a deployed stack with boto3.

    nox -s invoke -- STACK --tenant T --batch-size N [--run-id R]
    nox -s logs -- STACK [--minutes 30]

The function's name comes from the stack output ``dryRunFunctionName`` (Pulumi CLI), or from
``--function-name`` when given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

STACKS = ("dev", "staging", "prod")
PULUMI_MISSING = (
    "pulumi CLI not found on PATH: install it (https://www.pulumi.com/docs/install/, e.g. "
    "`curl -fsSL https://get.pulumi.com | sh`) and rerun"
)


class ToolError(Exception):
    """A one-line failure for a person."""


def require_stack(stack: str | None) -> str:
    if stack not in STACKS:
        raise ToolError(f"STACK: expected one of {', '.join(STACKS)}, got {stack!r}")
    return stack


def function_name(stack: str, explicit: str | None) -> str:
    """The dry-run function of a stack: explicit, else the stack output via the Pulumi CLI."""
    if explicit:
        return explicit
    if shutil.which("pulumi") is None:
        raise ToolError(PULUMI_MISSING)
    completed = subprocess.run(
        ["pulumi", "stack", "output", "dryRunFunctionName", "--stack", stack],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0 or not completed.stdout.strip():
        raise ToolError(
            f"no dryRunFunctionName output on stack {stack}: deploy it first "
            f"(nox -s deploy -- {stack})"
        )
    return completed.stdout.strip()


def invoke(client: Any, name: str, event: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Invoke synchronously; return the JSON answer and whether the function raised."""
    response = client.invoke(
        FunctionName=name, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
    )
    payload = json.loads(response["Payload"].read() or b"null")
    return payload, "FunctionError" in response


def recent_events(client: Any, name: str, minutes: int, now_ms: int | None = None) -> list[str]:
    """The function's log messages of the last ``minutes``, oldest first."""
    start = (now_ms or int(time.time() * 1000)) - minutes * 60_000
    messages: list[str] = []
    paginator = client.get_paginator("filter_log_events")
    for page in paginator.paginate(logGroupName=f"/aws/lambda/{name}", startTime=start):
        messages += [event["message"].rstrip("\n") for event in page.get("events", [])]
    return messages


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"nox -s {command} --",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("stack", nargs="?", help="dev, staging or prod")
    parser.add_argument("--function-name", default=None, help="skip the stack output lookup")
    if command == "invoke":
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--batch-size", type=int, required=True)
        parser.add_argument("--run-id", default=None)
    else:
        parser.add_argument("--minutes", type=int, default=30)
    return parser


def main(argv: Sequence[str] | None = None, client: Any = None) -> int:
    """``python -m devtools.aws_tools {invoke,logs} STACK ...``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list.pop(0) if args_list else ""
    if command not in ("invoke", "logs"):
        print("usage: python -m devtools.aws_tools {invoke,logs} STACK ...", file=sys.stderr)
        return 2
    args = _parser(command).parse_args(args_list)
    try:
        stack = require_stack(args.stack)
        name = function_name(stack, args.function_name)
        if client is None:
            import boto3  # noqa: PLC0415

            client = boto3.client("lambda" if command == "invoke" else "logs")
        if command == "invoke":
            event: dict[str, Any] = {"tenantId": args.tenant, "batchSize": args.batch_size}
            if args.run_id:
                event["runId"] = args.run_id
            payload, failed = invoke(client, name, event)
            print(json.dumps(payload, indent=2, ensure_ascii=False))
            return 1 if failed or (isinstance(payload, dict) and "error" in payload) else 0
        for message in recent_events(client, name, args.minutes):
            print(message)
        return 0
    except ToolError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
