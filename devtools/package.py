"""``nox -s package``: reproducible Lambda zips with a manifest each, validated.

    python -m devtools.package [--arch arm64|x86_64] [--python 3.12|3.13] [--skip-build]

Dependencies are installed for the Lambda platform (``pip --platform manylinux…
--only-binary=:all: --python-version``), never for the build machine; boto3 is not bundled (the
runtime has it). Entries are sorted, timestamps and permissions fixed, and bytecode precompiled
with ``--invalidation-mode unchecked-hash`` under the stable path ``/var/task`` (the task root is
read-only, so uncompiled or timestamp-checked bytecode would be recompiled at every cold start).
Two clean builds are byte-identical.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PathDistribution
from pathlib import Path
from typing import Any

from devtools.localdb import REPO_ROOT

BUILD_DIR = REPO_ROOT / "build"
MAX_ZIPPED = 50 * 1024 * 1024
MAX_UNZIPPED = 250 * 1024 * 1024
WARN_ZIPPED = 10 * 1024 * 1024
TASK_ROOT = "/var/task"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
PLATFORMS = {
    "arm64": ["manylinux2014_aarch64", "manylinux_2_28_aarch64"],
    "x86_64": ["manylinux2014_x86_64", "manylinux_2_28_x86_64"],
}
PYTHONS = ("3.11", "3.12", "3.13")
# Left out of every zip: what the runtime provides, and what a package should never ship.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath")
FORBIDDEN_PARTS = {"tests", "test", "__pycache__", ".pytest_cache", ".mypy_cache"}
FORBIDDEN_SUFFIXES = (".orig", ".rej", ".swp", ".DS_Store")


class PackageError(Exception):
    """Building or validating an artifact failed; the message is one line for a person."""


@dataclass(frozen=True)
class Service:
    """One deployable: its package, its handler, and extra folders shipped at the zip root."""

    name: str
    project_dir: str
    handler: str
    extra_dirs: tuple[str, ...] = ()

    @property
    def handler_file(self) -> str:
        module = self.handler.rsplit(".", 1)[0]
        return module.replace(".", "/") + ".py"


SERVICES = {
    "dry_run": Service("dry_run", "services/dry_run", "dry_run.handler.lambda_handler"),
    "migrate": Service(
        "migrate", "services/migrate", "migrate.handler.lambda_handler", ("migrations",)
    ),
}
LOCAL_PACKAGES = ("libs/pgconn", "services/migrate", "services/dry_run")


def _run(command: Sequence[str], what: str) -> None:
    completed = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        last = (completed.stderr.strip() or completed.stdout.strip()).splitlines()[-1:]
        raise PackageError(
            f"{what} failed: {last[0] if last else 'exit ' + str(completed.returncode)}"
        )


def find_interpreter(version: str) -> str:
    """An interpreter of the target version, to precompile bytecode it can load."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    for name in (f"python{version}", f"python{version.replace('.', '')}"):
        path = shutil.which(name)
        if path is None:
            continue
        probe = subprocess.run(
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return path
    raise PackageError(
        f"no Python {version} interpreter on PATH to precompile bytecode for the python{version} "
        f"runtime: install Python {version} (CI does), or build with --python "
        f"{sys.version_info.major}.{sys.version_info.minor} to test locally"
    )


def build_wheels(wheel_dir: Path) -> None:
    """Wheels of the workspace's own (pure Python) packages."""
    shutil.rmtree(wheel_dir, ignore_errors=True)
    wheel_dir.mkdir(parents=True)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(wheel_dir),
            *(str(REPO_ROOT / package) for package in LOCAL_PACKAGES),
        ],
        "building the workspace wheels",
    )


def install_for_lambda(
    service: Service, target: Path, arch: str, python: str, wheel_dir: Path
) -> None:
    """Install the service and its dependencies for the Lambda platform into ``target``."""
    platforms = [arg for tag in PLATFORMS[arch] for arg in ("--platform", tag)]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--target",
            str(target),
            *platforms,
            "--implementation",
            "cp",
            "--python-version",
            python,
            "--only-binary=:all:",
            "--find-links",
            str(wheel_dir),
            f"micro-agent-{service.name.replace('_', '-')}",
        ],
        f"installing {service.name} for {arch}/python{python}",
    )
    for name in RUNTIME_PROVIDED:
        for path in target.glob(f"{name}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(target / "bin", ignore_errors=True)
    for extra in service.extra_dirs:
        shutil.copytree(REPO_ROOT / extra, target / extra)


def strip_stray_files(root: Path) -> None:
    """Remove test suites and caches that packages ship inside themselves."""
    for path in sorted(root.rglob("*"), reverse=True):
        relative = path.relative_to(root).parts
        if path.is_dir() and relative[-1] in FORBIDDEN_PARTS:
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and path.name.endswith(FORBIDDEN_SUFFIXES):
            path.unlink()


def precompile(root: Path, interpreter: str) -> None:
    """Bytecode the runtime trusts without checking source timestamps, at a stable path."""
    _run(
        [
            interpreter,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(root),
            "-p",
            TASK_ROOT,
            str(root),
        ],
        "precompiling bytecode",
    )


def write_zip(root: Path, destination: Path) -> None:
    """Zip ``root`` with sorted entries, a fixed timestamp and fixed permissions."""
    destination.unlink(missing_ok=True)
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.external_attr = (0o100755 if os.access(path, os.X_OK) else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            zf.writestr(info, path.read_bytes(), compresslevel=9)


def dependency_versions(root: Path) -> dict[str, str]:
    """Name and version of every distribution installed in the artifact."""
    versions = {}
    for info in sorted(root.glob("*.dist-info")):
        metadata = PathDistribution(info).metadata
        versions[str(metadata["Name"])] = str(metadata["Version"])
    return versions


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def validate_archive(
    path: Path,
    service: Service,
    *,
    python: str,
    max_zipped: int = MAX_ZIPPED,
    max_unzipped: int = MAX_UNZIPPED,
) -> dict[str, Any]:
    """Check Lambda's size limits, the handler, and that nothing stray is inside."""
    if not path.is_file():
        raise PackageError(f"{path.name} does not exist: run `nox -s package` first")
    zipped = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise PackageError(f"{path.name} is not a valid zip file ({exc})") from None
    with archive:
        names = archive.namelist()
        unzipped = sum(info.file_size for info in archive.infolist())
        if zipped >= max_zipped:
            raise PackageError(
                f"{path.name} is {zipped / 2**20:.1f} MB zipped; Lambda's limit is "
                f"{max_zipped / 2**20:.0f} MB"
            )
        if unzipped >= max_unzipped:
            raise PackageError(
                f"{path.name} is {unzipped / 2**20:.1f} MB unzipped; Lambda's limit "
                f"is {max_unzipped / 2**20:.0f} MB"
            )
        if service.handler_file not in names:
            raise PackageError(f"{path.name} lacks the handler module {service.handler_file}")
        source = archive.read(service.handler_file).decode("utf-8")
        function = service.handler.rsplit(".", 1)[1]
        tree = ast.parse(source)
        if not any(
            isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body
        ):
            raise PackageError(f"{path.name}: {service.handler_file} defines no {function}()")
        tag = f".cpython-{python.replace('.', '')}"
        for name in names:
            parts = name.split("/")
            if FORBIDDEN_PARTS & set(parts[:-1]) - {"__pycache__"} or name.endswith(
                FORBIDDEN_SUFFIXES
            ):
                raise PackageError(f"{path.name} contains a stray file: {name}")
            if name.endswith(".pyc") and tag not in name:
                raise PackageError(f"{path.name} holds bytecode for another Python: {name}")
            if parts[0] == "bin" and len(parts) > 1:
                raise PackageError(f"{path.name} contains console scripts: {name}")
            if any(part in RUNTIME_PROVIDED for part in parts[:1]):
                raise PackageError(f"{path.name} bundles {parts[0]}, which the runtime provides")
        compiled = sum(name.endswith(".pyc") for name in names)
    return {"zipped": zipped, "unzipped": unzipped, "files": len(names), "pyc": compiled}


def package(
    service: Service, *, arch: str, python: str, bytecode: bool = True, build_dir: Path = BUILD_DIR
) -> dict[str, Any]:
    """Build, validate and describe one artifact; return its manifest."""
    interpreter = find_interpreter(python) if bytecode else None
    staging = build_dir / "staging" / service.name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    wheel_dir = build_dir / "wheels"
    build_wheels(wheel_dir)  # always: a stale wheel would ship yesterday's code
    install_for_lambda(service, staging, arch, python, wheel_dir)
    strip_stray_files(staging)
    if interpreter is not None:
        precompile(staging, interpreter)
    artifact = build_dir / f"{service.name}.zip"
    write_zip(staging, artifact)
    sizes = validate_archive(artifact, service, python=python)
    manifest = {
        "service": service.name,
        "artifact": artifact.name,
        "sha256": sha256_of(artifact),
        "size_zipped": sizes["zipped"],
        "size_unzipped": sizes["unzipped"],
        "files": sizes["files"],
        "bytecode_files": sizes["pyc"],
        "python": python,
        "architecture": arch,
        "platforms": PLATFORMS[arch],
        "handler": service.handler,
        "dependencies": dependency_versions(staging),
    }
    (build_dir / f"{service.name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check_existing(service: Service, build_dir: Path = BUILD_DIR) -> dict[str, Any]:
    """--skip-build: validate the artifact on disk against its manifest."""
    manifest_path = build_dir / f"{service.name}.json"
    if not manifest_path.is_file():
        raise PackageError(f"{manifest_path.name} is missing: run `nox -s package` first")
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    artifact = build_dir / f"{service.name}.zip"
    validate_archive(artifact, service, python=manifest["python"])
    actual = sha256_of(artifact)
    if actual != manifest["sha256"]:
        raise PackageError(
            f"{artifact.name} changed since it was built (sha256 {actual[:12]}… "
            f"vs manifest {manifest['sha256'][:12]}…); rebuild it"
        )
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nox -s package``."""
    parser = argparse.ArgumentParser(
        prog="nox -s package --",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="arm64")
    parser.add_argument("--python", choices=PYTHONS, default="3.12")
    parser.add_argument("--skip-build", action="store_true", help="validate what is there")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="skip precompilation (slower cold starts; local experiments only)",
    )
    parser.add_argument("--service", choices=sorted(SERVICES), action="append")
    args = parser.parse_args(argv)
    try:
        for name in args.service or sorted(SERVICES):
            service = SERVICES[name]
            if args.skip_build:
                manifest = check_existing(service)
            else:
                manifest = package(
                    service, arch=args.arch, python=args.python, bytecode=not args.no_bytecode
                )
            size = manifest["size_zipped"]
            print(
                f"{manifest['artifact']}: {size / 2**20:.1f} MB zipped, "
                f"{manifest['size_unzipped'] / 2**20:.1f} MB unzipped, "
                f"python{manifest['python']}/{manifest['architecture']}, "
                f"sha256 {manifest['sha256']}"
            )
            if size > WARN_ZIPPED:
                print(
                    f"warning: {manifest['artifact']} is over 10 MB zipped: cold starts and "
                    "deploys slow down; look for dependencies to trim"
                )
    except PackageError as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
