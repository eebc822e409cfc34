"""``nox -s invoke-artifact``: run the packaged handler the way Lambda would, before a deploy.

Builds the dry-run zip for this machine's Python and architecture, extracts it, and runs its
handler in a fresh interpreter (``-I -S``) whose ``sys.path`` holds only the artifact, boto3 (as
the runtime provides it) and the standard library, against ``DATABASE_URL``. A dependency
missing from the zip fails here, not in AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from devtools.localdb import LOCAL_DIR
from devtools.package import BUILD_DIR, SERVICES, PackageError, package
from devtools.seed import DEMO_TENANT, seed_demo
from migrate.files import default_migrations_dir
from migrate.runner import Runner

LOCAL_BUILD = BUILD_DIR / "local"
RUNTIME_PACKAGES = ("boto3", "botocore")

# Runs inside the fresh interpreter: argv = artifact dir, runtime dir, event JSON, response file.
BOOTSTRAP = """
import json, sys
artifact, runtime, event, response_file = sys.argv[1:5]
sys.path[:0] = [artifact, runtime]
leaked = [p for p in sys.path if "site-packages" in p or "dist-packages" in p]
assert not leaked, f"sys.path leaks installed packages: {leaked}"

class Context:
    function_name = "micro-agent-dry-run-artifact"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:artifact"
    aws_request_id = "artifact-local"
    log_group_name = "/aws/lambda/artifact"
    log_stream_name = "local"
    def get_remaining_time_in_millis(self):
        return 60000

from dry_run.handler import lambda_handler
import dry_run.handler as handler_module
assert handler_module.__file__.startswith(artifact), handler_module.__file__
result = lambda_handler(json.loads(event), Context())
with open(response_file, "w") as handle:
    json.dump(result, handle)
"""


def local_target() -> tuple[str, str]:
    """This interpreter's Python version and Lambda architecture name."""
    arch = "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"
    return f"{sys.version_info.major}.{sys.version_info.minor}", arch


def runtime_dir(build_dir: Path) -> Path:
    """boto3 and botocore only, installed once: what the Lambda runtime provides."""
    target = build_dir / "runtime"
    if not (target / "boto3").is_dir():
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                str(target),
                *RUNTIME_PACKAGES,
            ],
            check=True,
        )
    return target


def extract(artifact: Path, destination: Path) -> Path:
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    with zipfile.ZipFile(artifact) as archive:
        archive.extractall(destination)
    return destination


def run_artifact(
    event: dict[str, Any],
    database_url: str,
    *,
    build_dir: Path = LOCAL_BUILD,
    artifact: Path | None = None,
    logs: Path | None = None,
) -> dict[str, Any]:
    """Package (unless ``artifact`` is given), extract and invoke the dry-run handler."""
    build_dir.mkdir(parents=True, exist_ok=True)
    if artifact is None:
        python, arch = local_target()
        manifest = package(SERVICES["dry_run"], arch=arch, python=python, build_dir=build_dir)
        artifact = build_dir / manifest["artifact"]
    extracted = extract(artifact, build_dir / "extracted")
    runtime = runtime_dir(build_dir)
    response_file = build_dir / "response.json"
    response_file.unlink(missing_ok=True)
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": database_url,
        "LAMBDA_TASK_ROOT": str(extracted),
        "POWERTOOLS_SERVICE_NAME": "micro-agent-dry-run",
    }
    log_target = logs or (LOCAL_DIR / "artifact-logs.jsonl")
    log_target.parent.mkdir(parents=True, exist_ok=True)
    with log_target.open("a", encoding="utf-8") as log_file:
        completed = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                BOOTSTRAP,
                str(extracted),
                str(runtime),
                json.dumps(event),
                str(response_file),
            ],
            env=environment,
            stdout=log_file,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    if completed.returncode != 0:
        last = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise PackageError(f"the artifact's handler failed: {last[0]}")
    result: dict[str, Any] = json.loads(response_file.read_text())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nox -s invoke-artifact``."""
    parser = argparse.ArgumentParser(prog="nox -s invoke-artifact --", description=__doc__)
    parser.add_argument("--tenant", default=DEMO_TENANT)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--run-id", default=None)
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        print(
            "DATABASE_URL is not set: run this through `nox -s invoke-artifact`.", file=sys.stderr
        )
        return 2
    with psycopg.connect(url, autocommit=True) as conn:
        Runner(conn, default_migrations_dir()).apply()
        if args.tenant == DEMO_TENANT:
            seed_demo(conn)
    event: dict[str, Any] = {"tenantId": args.tenant, "batchSize": args.batch_size}
    if args.run_id:
        event["runId"] = args.run_id
    try:
        response = run_artifact(event, url)
    except PackageError as exc:
        print(f"invoke-artifact: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(response, indent=2, ensure_ascii=False))
    return 1 if "error" in response else 0


if __name__ == "__main__":
    sys.exit(main())
