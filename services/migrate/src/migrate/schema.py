"""Structure validation: the live database against ``migrations/expected_schema.toml``."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from migrate.files import EXPECTED_SCHEMA_FILE, MigrationFileError


@dataclass(frozen=True)
class ExpectedTable:
    """What one table must have; extra columns or indexes are allowed (forward-only changes)."""

    columns: tuple[str, ...]
    indexes: tuple[str, ...] = field(default=())


def load_expected_schema(directory: Path) -> dict[str, ExpectedTable]:
    """Read the expected structure that sits beside the migrations."""
    path = directory / EXPECTED_SCHEMA_FILE
    if not path.is_file():
        raise MigrationFileError(f"{path} is missing: it lists the tables, columns and indexes")
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MigrationFileError(f"{path.name}: not valid TOML ({exc})") from exc
    tables: dict[str, Any] = document.get("tables", {})
    return {
        name: ExpectedTable(
            columns=tuple(spec.get("columns", ())), indexes=tuple(spec.get("indexes", ()))
        )
        for name, spec in tables.items()
    }


def find_drift(conn: psycopg.Connection[Any], expected: dict[str, ExpectedTable]) -> list[str]:
    """List what the live schema lacks, one readable line per problem (empty = no drift)."""
    columns: dict[str, set[str]] = {}
    for table, column in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    ):
        columns.setdefault(table, set()).add(column)
    indexes: dict[str, dict[str, bool]] = {}
    for table, index, valid in conn.execute(
        "SELECT t.relname, i.relname, x.indisvalid FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "WHERE t.relnamespace = current_schema()::regnamespace"
    ):
        indexes.setdefault(table, {})[index] = valid

    problems: list[str] = []
    for table, spec in sorted(expected.items()):
        if table not in columns:
            problems.append(f"missing table {table}")
            continue
        problems += [
            f"missing column {table}.{column}"
            for column in spec.columns
            if column not in columns[table]
        ]
        for index in spec.indexes:
            state = indexes.get(table, {}).get(index)
            if state is None:
                problems.append(f"missing index {index} on {table}")
            elif not state:
                problems.append(f"index {index} on {table} is INVALID (a failed concurrent build)")
    return problems
