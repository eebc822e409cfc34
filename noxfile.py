"""Every workflow a person or CI runs: ``nox --list`` is the help."""

from __future__ import annotations

import os
import shutil
import sys

import nox

# nox puts this file's folder on sys.path; aws_tools imports only the standard library.
from devtools.aws_tools import PULUMI_MISSING, STACKS

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True
# A bare `nox` checks; everything else is asked for by name.
nox.options.sessions = ["lint", "typecheck", "tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
# The workspace packages, installed editable so that sessions run the code in the tree.
WORKSPACE = [
    *("-e", "libs/pgconn"),
    *("-e", "services/migrate"),
    *("-e", "services/dry_run"),
    *("-e", "services/inbound"),
    *("-e", "."),
]
TYPED_PATHS = [
    "libs/pgconn/src",
    "services/migrate/src",
    "services/dry_run/src",
    "services/inbound/src",
    "devtools",
    "pulumi",
    "noxfile.py",
]


def install(session: nox.Session, *groups: str, workspace: bool = True) -> None:
    """Install the workspace and the named dependency groups of pyproject.toml."""
    requirements = [
        req for group in groups for req in nox.project.dependency_groups(PYPROJECT, group)
    ]
    session.install(*(WORKSPACE if workspace else []), *requirements)


def with_database(session: nox.Session, *command: str) -> None:
    """Run a command with DATABASE_URL set: the configured one, else the embedded server."""
    session.run("python", "-m", "devtools.localdb", "run", "--", *command)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff."""
    install(session, "lint", workspace=False)
    session.run("ruff", "check", *(session.posargs or ["."]))
    session.run("ruff", "format", "--check", *(session.posargs or ["."]))


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the services, libraries, tooling and Pulumi program with mypy --strict."""
    install(session, "typecheck")
    session.run("mypy", *(session.posargs or TYPED_PATHS))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (unit, integration on real PostgreSQL, infra); posargs go to pytest."""
    install(session, "test")
    session.run("pytest", *session.posargs)


# Integration tests that never reach the embedded server (a provider fake on a socket, moto, a
# TLS server of their own): `tests` runs them once; running them again on 16 proves nothing.
NO_EMBEDDED_PG_TESTS = (
    "tests/integration/test_whatsapp_sender.py",
    "tests/integration/test_email_sender.py",
    "tests/integration/test_tls.py",
)


@nox.session(name="tests-pg16", default=False)
def tests_pg16(session: nox.Session) -> None:
    """Run the integration tests on embedded PostgreSQL 16, Aurora's major version."""
    # A DATABASE_URL the caller set still wins: the tests then run on that server, whatever
    # its version, exactly as `nox -s tests` does.
    if os.environ.get("DATABASE_URL", "").strip():
        session.warn("DATABASE_URL is set: the tests run on that server, not on PostgreSQL 16")
    install(session, "test")
    session.run(
        "pytest",
        *(
            session.posargs
            or ["-m", "integration", *(f"--ignore={path}" for path in NO_EMBEDDED_PG_TESTS)]
        ),
        env={"MICRO_AGENT_EMBEDDED_PG": "16"},
    )


@nox.session
def migrate(session: nox.Session) -> None:
    """Apply the migrations (DATABASE_URL, else the embedded server) and print their status."""
    install(session)
    command = session.posargs or ["apply"]
    with_database(session, "python", "-m", "migrate", *command)
    if not session.posargs:
        with_database(session, "python", "-m", "migrate", "status")


@nox.session(default=False)
def db(session: nox.Session) -> None:
    """Start the embedded PostgreSQL, print its URL for psql, keep it up until Ctrl-C."""
    install(session)
    session.run("python", "-m", "devtools.localdb", "serve")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: migrate, seed tenant test-001, invoke the dry-run handler, show decisions."""
    install(session)
    with_database(session, "python", "-m", "devtools.demo")


@nox.session(name="invoke-local", default=False)
def invoke_local(session: nox.Session) -> None:
    """Invoke the handler in-process against DATABASE_URL: -- --tenant T --batch-size N."""
    if not session.posargs:
        session.error("usage: nox -s invoke-local -- --tenant T --batch-size N [--run-id R]")
    install(session)
    with_database(session, "python", "-m", "devtools.invoke", *session.posargs)


@nox.session(name="demo-live", default=False)
def demo_live(session: nox.Session) -> None:
    """Live mode on this machine: fake Graph API and moto (SES, Secrets Manager), real handler."""
    install(session, "demo-live")
    with_database(session, "python", "-m", "devtools.demo_live", *session.posargs)


# devtools.tenant's commands (it imports the services, which nox's own environment lacks).
TENANT_COMMANDS = ("mode", "show", "sender", "resume")


@nox.session(default=False)
def tenant(session: nox.Session) -> None:
    """A tenant's live settings: -- mode T dry_run|live, show T, sender T CHANNEL S, resume T C."""
    if not session.posargs or session.posargs[0] not in TENANT_COMMANDS:
        session.error(
            "usage: nox -s tenant -- mode TENANT dry_run|live | show TENANT | "
            "sender TENANT whatsapp|email|calendar SENDER [--secret-arn ARN] "
            "[--configuration-set NAME] | resume TENANT whatsapp|email|calendar"
        )
    install(session)
    with_database(session, "python", "-m", "devtools.tenant", *session.posargs)


@nox.session(default=False)
def sweep(session: nox.Session) -> None:
    """Record live claims no invocation can answer any more as unknown: -- [--older-than S]."""
    install(session)
    with_database(session, "python", "-m", "dry_run.sweeper", *session.posargs)


@nox.session(default=False)
def holidays(session: nox.Session) -> None:
    """Regenerate dry_run/holidays_br.py from the holidays package."""
    install(session)
    session.run("python", "-m", "devtools.gen_holidays")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks of the hot paths; prints a table and writes build/bench.json."""
    install(session)
    session.install("pip")
    with_database(session, "python", "-m", "devtools.bench", *session.posargs)


# --- packaging and delivery ----------------------------------------------------------------


def _stack(session: nox.Session, command: str) -> str:
    """The STACK argument, or a usage line naming the choices."""
    if not session.posargs or session.posargs[0] not in STACKS:
        session.error(f"usage: nox -s {command} -- STACK ...  (STACK: {', '.join(STACKS)})")
    return session.posargs[0]


def _require_pulumi(session: nox.Session) -> None:
    """Exit 2 with one line when the Pulumi CLI is missing."""
    if shutil.which("pulumi") is None:
        print(PULUMI_MISSING, file=sys.stderr)
        raise SystemExit(2)


@nox.session(default=False)
def package(session: nox.Session) -> None:
    """Build the Lambda zips and manifests in build/: --arch, --python, --skip-build."""
    install(session)
    session.install("pip")
    session.run("python", "-m", "devtools.package", *session.posargs)


@nox.session(name="invoke-artifact", default=False)
def invoke_artifact(session: nox.Session) -> None:
    """Run the packaged handler in a fresh interpreter: -- --tenant test-001 --batch-size 5."""
    install(session)
    session.install("pip")
    with_database(session, "python", "-m", "devtools.artifact", *session.posargs)


@nox.session(default=False)
def upload(session: nox.Session) -> None:
    """Upload the artifacts content-addressed: -- --bucket NAME [--endpoint-url URL]."""
    if not any(arg.startswith("--bucket") for arg in session.posargs):
        session.error("usage: nox -s upload -- --bucket NAME [--endpoint-url URL]")
    install(session)
    session.run("python", "-m", "devtools.upload", *session.posargs)


@nox.session(venv_backend="none", default=False)
def preview(session: nox.Session) -> None:
    """Preview a stack's changes: nox -s preview -- dev|staging|prod."""
    stack = _stack(session, "preview")
    _require_pulumi(session)
    session.run("pulumi", "preview", "--stack", stack, *session.posargs[1:], external=True)


@nox.session(default=False)
def deploy(session: nox.Session) -> None:
    """Package for Lambda, then pulumi up: nox -s deploy -- dev|staging|prod."""
    stack = _stack(session, "deploy")
    _require_pulumi(session)
    install(session)
    session.install("pip")
    session.run("python", "-m", "devtools.package")
    session.run("pulumi", "up", "--stack", stack, *session.posargs[1:], external=True)


@nox.session(default=False)
def invoke(session: nox.Session) -> None:
    """Invoke a deployed dry-run: nox -s invoke -- STACK --tenant T --batch-size N."""
    _stack(session, "invoke")
    install(session)
    session.run("python", "-m", "devtools.aws_tools", "invoke", *session.posargs)


@nox.session(default=False)
def logs(session: nox.Session) -> None:
    """Print a deployed dry-run's recent log lines: nox -s logs -- STACK [--minutes 30]."""
    _stack(session, "logs")
    install(session)
    session.run("python", "-m", "devtools.aws_tools", "logs", *session.posargs)
