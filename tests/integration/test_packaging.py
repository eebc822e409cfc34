"""Packaging and delivery: reproducible artifacts, validation, the artifact run end to end,
content-addressed upload against moto, the deploy sessions' argument handling, the workflow."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from devtools import aws_tools, upload
from devtools.artifact import local_target, run_artifact
from devtools.package import (
    SERVICES,
    TASK_ROOT,
    PackageError,
    check_existing,
    package,
    validate_archive,
)
from devtools.package import (
    main as package_main,
)
from tests.support import REPO_ROOT, insert_leads, insert_tenant

pytestmark = pytest.mark.integration
PYTHON, ARCH = local_target()


def build_all(build_dir: Path) -> dict[str, dict[str, Any]]:
    return {
        name: package(service, arch=ARCH, python=PYTHON, build_dir=build_dir)
        for name, service in SERVICES.items()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Both artifacts, built once for this interpreter and machine."""
    build_dir = tmp_path_factory.mktemp("build")
    return build_dir, build_all(build_dir)


def test_two_clean_builds_are_byte_identical(
    built: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, first = built

    second = build_all(tmp_path / "again")

    for name in SERVICES:
        assert second[name]["sha256"] == first[name]["sha256"], name


def test_the_manifest_describes_the_artifact(built: tuple[Path, dict[str, Any]]) -> None:
    build_dir, manifests = built
    manifest = json.loads((build_dir / "dry_run.json").read_text())

    assert manifest == manifests["dry_run"]
    data = (build_dir / "dry_run.zip").read_bytes()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["size_zipped"] == len(data)
    assert (manifest["python"], manifest["architecture"]) == (PYTHON, ARCH)
    assert {"pydantic", "psycopg", "aws_lambda_powertools", "micro-agent-dry-run"} <= set(
        manifest["dependencies"]
    )
    assert "boto3" not in manifest["dependencies"]
    assert "holidays" not in manifest["dependencies"]


def test_the_artifact_holds_the_handler_precompiled_and_nothing_stray(
    built: tuple[Path, dict[str, Any]],
) -> None:
    build_dir, _ = built
    with zipfile.ZipFile(build_dir / "dry_run.zip") as archive:
        names = archive.namelist()
        infos = archive.infolist()
        tag = f"cpython-{PYTHON.replace('.', '')}"
        pyc = archive.read(f"dry_run/__pycache__/handler.{tag}.pyc")

    assert names == sorted(names)
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert not any(part in {"tests", "test"} for name in names for part in name.split("/"))
    assert not any(name.startswith(("boto3/", "botocore/", "bin/")) for name in names)
    # Flags 0b01: hash-based and unchecked, so a read-only task root is never recompiled.
    assert int.from_bytes(pyc[4:8], "little") == 1
    assert f"{TASK_ROOT}/dry_run/handler.py".encode() in pyc
    with zipfile.ZipFile(build_dir / "migrate.zip") as archive:
        assert "migrations/0007_dry_run_log.sql" in archive.namelist()
        assert "migrations/expected_schema.toml" in archive.namelist()


def test_both_artifacts_ship_the_rds_ca_bundle(built: tuple[Path, dict[str, Any]]) -> None:
    build_dir, _ = built
    bundle = (REPO_ROOT / "libs/pgconn/src/pgconn/rds-global-bundle.pem").read_bytes()

    for name in SERVICES:
        with zipfile.ZipFile(build_dir / f"{name}.zip") as archive:
            assert archive.read("pgconn/rds-global-bundle.pem") == bundle, name


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


HANDLER = b"def lambda_handler(event, context):\n    return {}\n"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"dry_run/other.py": b""}, "lacks the handler module dry_run/handler.py"),
        ({"dry_run/handler.py": b"def handler(e, c): ...\n"}, "defines no lambda_handler()"),
        ({"dry_run/handler.py": HANDLER, "pkg/tests/test_x.py": b""}, "stray file: pkg/tests"),
        ({"dry_run/handler.py": HANDLER, "boto3/__init__.py": b""}, "bundles boto3"),
        (
            {"dry_run/handler.py": HANDLER, "x/__pycache__/y.cpython-39.pyc": b""},
            "bytecode for another Python",
        ),
    ],
)
def test_a_broken_package_is_rejected_with_one_line(
    tmp_path: Path, files: dict[str, bytes], message: str
) -> None:
    artifact = _zip(tmp_path / "dry_run.zip", files)

    with pytest.raises(PackageError, match=message) as caught:
        validate_archive(artifact, SERVICES["dry_run"], python=PYTHON)
    assert "\n" not in str(caught.value)


def test_an_oversized_package_is_rejected(tmp_path: Path) -> None:
    artifact = _zip(
        tmp_path / "dry_run.zip", {"dry_run/handler.py": HANDLER, "blob.bin": os.urandom(300_000)}
    )

    with pytest.raises(PackageError, match=r"MB zipped; Lambda's limit is"):
        validate_archive(artifact, SERVICES["dry_run"], python=PYTHON, max_zipped=200_000)
    with pytest.raises(PackageError, match=r"MB unzipped; Lambda's limit is"):
        validate_archive(artifact, SERVICES["dry_run"], python=PYTHON, max_unzipped=250_000)


def test_not_a_zip_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "dry_run.zip").write_text("not a zip")

    with pytest.raises(PackageError, match="is not a valid zip file"):
        validate_archive(tmp_path / "dry_run.zip", SERVICES["dry_run"], python=PYTHON)


def test_skip_build_catches_an_artifact_changed_after_its_manifest(
    built: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    build_dir, _ = built
    copy = tmp_path / "b"
    shutil.copytree(build_dir, copy, ignore=shutil.ignore_patterns("staging", "wheels"))
    assert check_existing(SERVICES["migrate"], copy)["sha256"]
    with zipfile.ZipFile(copy / "migrate.zip", "a") as archive:
        archive.writestr("extra.txt", "tampered")

    with pytest.raises(PackageError, match="changed since it was built"):
        check_existing(SERVICES["migrate"], copy)


def test_packaging_for_a_python_not_on_this_machine_says_how_to_fix_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    other = "3.13" if PYTHON != "3.13" else "3.12"

    assert package_main(["--python", other, "--service", "migrate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"package: no Python {other} interpreter on PATH")
    assert "\n" not in err


def test_the_artifacts_handler_runs_end_to_end_in_a_fresh_interpreter(
    built: tuple[Path, dict[str, Any]], migrated_db: str, tmp_path: Path
) -> None:
    build_dir, _ = built
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "artifact-t")
        insert_leads(conn, "artifact-t", 3, whatsapp_opt_in=False)

    response = run_artifact(
        {"tenantId": "artifact-t", "batchSize": 5, "runId": "from-zip"},
        migrated_db,
        build_dir=tmp_path,
        artifact=build_dir / "dry_run.zip",
        logs=tmp_path / "logs.jsonl",
    )

    assert response["runId"] == "from-zip"
    assert [d["channel"] for d in response["decisions"]] == ["email"] * 3
    assert '"message":"summary"' in (tmp_path / "logs.jsonl").read_text()
    with psycopg.connect(migrated_db) as conn:
        rows = conn.execute("SELECT count(*) FROM dry_run_log WHERE run_id = 'from-zip'")
        assert rows.fetchone() == (3,)


# --- upload ----------------------------------------------------------------------------------


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    """moto's S3 with an empty ``artifacts`` bucket."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="artifacts")
        yield client


def test_upload_is_content_addressed_idempotent_and_verified(
    built: tuple[Path, dict[str, Any]], s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    build_dir, manifests = built

    first = upload.main(["--bucket", "artifacts", "--build-dir", str(build_dir)], client=s3)
    second = upload.main(["--bucket", "artifacts", "--build-dir", str(build_dir)], client=s3)

    key = f"dry_run/{manifests['dry_run']['sha256']}.zip"
    head = s3.head_object(Bucket="artifacts", Key=key, ChecksumMode="ENABLED")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="artifacts")["Contents"]]

    out = capsys.readouterr().out
    assert (first, second) == (0, 0)
    assert out.count("(uploaded)") == 2
    assert out.count("(already there)") == 2
    assert (
        head["ChecksumSHA256"]
        == base64.b64encode(
            hashlib.sha256((build_dir / "dry_run.zip").read_bytes()).digest()
        ).decode()
    )
    assert sorted(listed) == sorted(
        f"{name}/{manifest['sha256']}.zip" for name, manifest in manifests.items()
    )
    assert f'"dryRunArtifactKey": "{key}"' in out


def test_upload_refuses_an_overwritten_content_address(
    built: tuple[Path, dict[str, Any]], s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    build_dir, manifests = built
    s3.put_object(
        Bucket="artifacts",
        Key=f"dry_run/{manifests['dry_run']['sha256']}.zip",
        Body=b"something else",
        ChecksumAlgorithm="SHA256",
    )

    code = upload.main(["--bucket", "artifacts", "--build-dir", str(build_dir)], client=s3)

    assert code == 2
    assert "someone overwrote a content-addressed object" in capsys.readouterr().err


# --- the deploy sessions ---------------------------------------------------------------------


def _nox(*args: str, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nox", "--noxfile", str(REPO_ROOT / "noxfile.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{path}"},
    )


@pytest.mark.parametrize("args", [[], ["qa"]])
def test_preview_without_a_known_stack_prints_the_usage(args: list[str]) -> None:
    completed = _nox("-s", "preview", "--", *args) if args else _nox("-s", "preview")

    assert completed.returncode != 0
    assert "usage: nox -s preview -- STACK ...  (STACK: dev, staging, prod)" in (
        completed.stdout + completed.stderr
    )


def test_preview_without_the_pulumi_cli_says_how_to_install_it_and_exits_2() -> None:
    completed = _nox("-s", "preview", "--", "dev")

    assert completed.returncode == 2
    lines = [line for line in completed.stderr.splitlines() if "pulumi CLI not found" in line]
    assert lines == [aws_tools.PULUMI_MISSING]


def test_invoke_needs_a_stack_and_the_cli_to_find_the_function(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")

    assert aws_tools.main(["invoke", "qa", "--tenant", "t", "--batch-size", "5"]) == 2
    assert "STACK: expected one of dev, staging, prod, got 'qa'" in capsys.readouterr().err
    assert aws_tools.main(["invoke", "dev", "--tenant", "t", "--batch-size", "5"]) == 2
    assert aws_tools.PULUMI_MISSING in capsys.readouterr().err


class FakeLambda:
    """Answers like Lambda's Invoke API; records what it was sent."""

    def __init__(self, answer: dict[str, Any], error: bool = False) -> None:
        self.answer, self.error, self.calls = answer, error, []  # type: ignore[var-annotated]

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        import io

        self.calls.append(kwargs)
        response: dict[str, Any] = {"Payload": io.BytesIO(json.dumps(self.answer).encode())}
        if self.error:
            response["FunctionError"] = "Unhandled"
        return response


def test_invoke_sends_the_event_and_pretty_prints_the_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeLambda({"runId": "r", "decisions": []})

    code = aws_tools.main(
        [
            "invoke",
            "dev",
            "--function-name",
            "fn",
            "--tenant",
            "test-001",
            "--batch-size",
            "5",
            "--run-id",
            "r",
        ],
        client=fake,
    )

    assert code == 0
    assert fake.calls[0]["FunctionName"] == "fn"
    assert json.loads(fake.calls[0]["Payload"]) == {
        "tenantId": "test-001",
        "batchSize": 5,
        "runId": "r",
    }
    assert json.loads(capsys.readouterr().out) == {"runId": "r", "decisions": []}
    failing = FakeLambda({"errorMessage": "boom"}, error=True)
    assert (
        aws_tools.main(
            ["invoke", "dev", "--function-name", "fn", "--tenant", "t", "--batch-size", "5"],
            client=failing,
        )
        == 1
    )


@pytest.mark.usefixtures("aws_env")
def test_logs_prints_the_functions_recent_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    import time

    with mock_aws():
        client = boto3.client("logs")
        client.create_log_group(logGroupName="/aws/lambda/fn")
        client.create_log_stream(logGroupName="/aws/lambda/fn", logStreamName="s")
        now = int(time.time() * 1000)
        client.put_log_events(
            logGroupName="/aws/lambda/fn",
            logStreamName="s",
            logEvents=[{"timestamp": now - 1000, "message": '{"message":"summary"}'}],
        )

        code = aws_tools.main(
            ["logs", "dev", "--function-name", "fn", "--minutes", "5"], client=client
        )

    assert code == 0
    assert capsys.readouterr().out.strip() == '{"message":"summary"}'


def test_the_ci_workflow_passes_actionlint() -> None:
    binary = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert binary, "actionlint comes with the test dependencies"

    completed = subprocess.run(
        [binary, str(REPO_ROOT / ".github/workflows/ci.yml")],
        capture_output=True,
        text=True,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
