"""The migration runner Lambda, invoked by ``pulumi up`` whenever ``migrations/`` changes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pulumi_aws as aws
from function import LambdaFunction, LambdaFunctionArgs

import pulumi


def migrations_hash(directory: Path) -> str:
    """sha256 over every file's name and content, in name order: changes when any file does."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class MigrationRunnerArgs:
    """The runner function's settings, and the hash that triggers a new invocation."""

    function: LambdaFunctionArgs
    migrations_hash: str


class MigrationRunner(pulumi.ComponentResource):
    """Function (reserved concurrency 1, no retries) plus the Invocation that applies."""

    def __init__(
        self, name: str, args: MigrationRunnerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:migration:MigrationRunner", name, None, opts)
        self.function = LambdaFunction(
            f"{name}-runner", args.function, opts=pulumi.ResourceOptions(parent=self)
        )
        payload = {"action": "apply", "migrationsHash": args.migrations_hash}
        # A new hash replaces the Invocation, which invokes the runner again during `up`.
        self.invocation = aws.lambda_.Invocation(
            f"{name}-apply",
            function_name=self.function.name,
            input=json.dumps(payload),
            triggers={"migrationsHash": args.migrations_hash},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.function.function]),
        )
        self.register_outputs(
            {"functionName": self.function.name, "migrationsHash": args.migrations_hash}
        )
