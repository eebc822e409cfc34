"""Invoke the dry-run handler in-process, as Lambda would, keeping its log lines apart.

    python -m devtools.invoke --tenant test-001 --batch-size 50 [--run-id R]

prints the JSON response on stdout; the function's own JSON log and EMF lines are appended to
``.local/invoke-logs.jsonl`` (or ``--logs FILE``; ``--logs -`` for stderr). Uses
``DATABASE_URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from devtools.lambda_context import LocalLambdaContext
from devtools.localdb import LOCAL_DIR

DEFAULT_LOG_FILE = LOCAL_DIR / "invoke-logs.jsonl"


def invoke_handler(event: dict[str, Any], log_stream: IO[str]) -> dict[str, Any]:
    """Import and call ``dry_run.handler.lambda_handler`` with its stdout sent to ``log_stream``.

    Powertools binds its log stream when the handler module is first imported, so the import
    happens inside the redirection too.
    """
    with contextlib.redirect_stdout(log_stream):
        module = importlib.import_module("dry_run.handler")
        handler: Callable[[Any, Any], dict[str, Any]] = module.lambda_handler
        return handler(event, LocalLambdaContext())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nox -s invoke-local``."""
    parser = argparse.ArgumentParser(prog="nox -s invoke-local --", description=__doc__)
    parser.add_argument("--tenant", required=True, help="tenant id, e.g. test-001")
    parser.add_argument("--batch-size", required=True, type=int, help="1..1000")
    parser.add_argument("--run-id", default=None, help="replays a run when reused")
    parser.add_argument(
        "--logs", default=str(DEFAULT_LOG_FILE), help="append the function's log lines here"
    )
    args = parser.parse_args(argv)
    event: dict[str, Any] = {"tenantId": args.tenant, "batchSize": args.batch_size}
    if args.run_id is not None:
        event["runId"] = args.run_id
    with contextlib.ExitStack() as stack:
        logs = (
            stack.enter_context(open(args.logs, "a", encoding="utf-8")) if args.logs else sys.stderr
        )
        response = invoke_handler(event, logs)
    print(json.dumps(response, indent=2, ensure_ascii=False))
    return 1 if "error" in response else 0


if __name__ == "__main__":
    sys.exit(main())
