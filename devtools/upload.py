"""``nox -s upload -- --bucket NAME [--endpoint-url URL]``: content-addressed artifact upload.

Each ``build/<service>.zip`` goes to ``<service>/<sha256>.zip``. An object already there is
skipped once its stored ``ChecksumSHA256`` matches; a new one is uploaded with that checksum,
which S3 verifies, and read back to confirm. Set ``dryRunArtifactKey``/``migrateArtifactKey``
in the stack config to the printed keys to deploy from the bucket.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.package import BUILD_DIR, SERVICES, PackageError, check_existing

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


# The stack config key that deploys each service from the bucket.
CONFIG_KEYS = {"dry_run": "dryRunArtifactKey", "migrate": "migrateArtifactKey"}


class UploadError(Exception):
    """An upload could not be completed or verified."""


@dataclass(frozen=True)
class Uploaded:
    """What happened to one artifact."""

    service: str
    key: str
    action: str  # "uploaded" or "already there"


def b64_checksum(sha256_hex: str) -> str:
    """S3's ChecksumSHA256 is the base64 of the raw digest."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def _stored_checksum(client: S3Client, bucket: str, key: str) -> str | None:
    from botocore.exceptions import ClientError  # noqa: PLC0415

    try:
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return head.get("ChecksumSHA256")


def upload_artifact(
    client: S3Client, bucket: str, service: str, build_dir: Path = BUILD_DIR
) -> Uploaded:
    """Upload one validated artifact under its content address, idempotently."""
    manifest: dict[str, Any] = check_existing(SERVICES[service], build_dir)
    key = f"{service}/{manifest['sha256']}.zip"
    expected = b64_checksum(manifest["sha256"])
    stored = _stored_checksum(client, bucket, key)
    if stored == expected:
        return Uploaded(service, key, "already there")
    if stored is not None:
        raise UploadError(
            f"s3://{bucket}/{key} exists with checksum {stored}, not {expected}: "
            "someone overwrote a content-addressed object; investigate first"
        )
    body = (build_dir / manifest["artifact"]).read_bytes()
    client.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=expected,
        Metadata={
            "service": service,
            "python": manifest["python"],
            "architecture": manifest["architecture"],
        },
    )
    if _stored_checksum(client, bucket, key) != expected:
        raise UploadError(f"s3://{bucket}/{key}: stored checksum does not match after upload")
    return Uploaded(service, key, "uploaded")


def main(argv: Sequence[str] | None = None, client: S3Client | None = None) -> int:
    """Entry point of ``nox -s upload``."""
    parser = argparse.ArgumentParser(
        prog="nox -s upload --",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    args = parser.parse_args(argv)
    if client is None:
        import boto3  # noqa: PLC0415

        client = boto3.client("s3", endpoint_url=args.endpoint_url)
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    results = []
    try:
        for service in sorted(SERVICES):
            result = upload_artifact(client, args.bucket, service, args.build_dir)
            results.append(result)
            print(f"{result.service}: s3://{args.bucket}/{result.key} ({result.action})")
    except (PackageError, UploadError) as exc:
        print(f"upload: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        print(f"upload: S3 refused: {exc}", file=sys.stderr)
        return 2
    keys = {CONFIG_KEYS[r.service]: r.key for r in results}
    print("stack config: " + json.dumps(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
