"""Migration files on disk: discovery, naming, checksums and per-file options."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import sqlparse

FILE_PATTERN = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
NON_TRANSACTIONAL_MARKER = re.compile(r"^--\s*transactional:\s*false\s*$", re.IGNORECASE)
_CONCURRENT_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)
_TRANSACTION_CONTROL = re.compile(r"^(BEGIN|COMMIT|ROLLBACK|END|START\s+TRANSACTION)\b", re.I)

EXPECTED_SCHEMA_FILE = "expected_schema.toml"


class MigrationFileError(Exception):
    """A file in the migrations folder breaks the naming or content rules."""


@dataclass(frozen=True)
class MigrationFile:
    """One forward-only migration file."""

    version: str
    name: str
    path: Path
    sql: str
    checksum: str
    transactional: bool

    @property
    def filename(self) -> str:
        return self.path.name

    def concurrent_index_names(self) -> list[str]:
        """Names of the indexes this file builds concurrently (to repair INVALID leftovers)."""
        return [match.group("name") for match in _CONCURRENT_INDEX.finditer(self.sql)]


def split_statements(sql: str) -> list[str]:
    """Split a file into statements, comments stripped (dollar-quoted bodies stay whole)."""
    statements = (
        sqlparse.format(part, strip_comments=True).strip() for part in sqlparse.split(sql)
    )
    return [statement for statement in statements if statement and statement != ";"]


def default_migrations_dir() -> Path:
    """Find the migrations folder: beside the package in a Lambda artifact, else the repo's.

    The artifact ships ``migrations/`` at its root, next to ``migrate/``; in the repository the
    package lives at ``services/migrate/src/migrate`` and the folder at the repository root.
    """
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "migrations", here.parents[3] / "migrations"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise MigrationFileError(
        f"no migrations folder found (looked in {', '.join(str(c) for c in candidates)}); "
        "pass --dir"
    )


def load_migrations(directory: Path) -> list[MigrationFile]:
    """Read every ``NNNN_description.sql`` file in version order, refusing malformed ones."""
    if not directory.is_dir():
        raise MigrationFileError(f"migrations folder {directory} does not exist")
    files: list[MigrationFile] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = FILE_PATTERN.match(path.name)
        if match is None:
            raise MigrationFileError(
                f"{path.name}: expected a name like 0001_description.sql (4 digits, lowercase)"
            )
        version = match.group("version")
        if version in seen:
            raise MigrationFileError(
                f"{path.name}: version {version} is also used by {seen[version]}"
            )
        seen[version] = path.name
        raw = path.read_bytes()
        sql = raw.decode("utf-8")
        if any(_TRANSACTION_CONTROL.match(statement) for statement in split_statements(sql)):
            raise MigrationFileError(
                f"{path.name}: contains BEGIN/COMMIT; the runner owns transactions, remove them"
            )
        first_line = sql.splitlines()[0] if sql else ""
        files.append(
            MigrationFile(
                version=version,
                name=match.group("name"),
                path=path,
                sql=sql,
                checksum=hashlib.sha256(raw).hexdigest(),
                transactional=NON_TRANSACTIONAL_MARKER.match(first_line) is None,
            )
        )
    return files
