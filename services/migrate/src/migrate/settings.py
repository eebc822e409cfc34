"""The environment variables the migration runner's Lambda reads (the Pulumi program sets them)."""

from __future__ import annotations

from pgconn import DB_HOST, DB_NAME, DB_SECRET_ARN

DEPLOYED_ENVIRONMENT = frozenset({DB_SECRET_ARN, DB_HOST, DB_NAME})
