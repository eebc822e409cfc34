"""``nox -s tenant``'s argument checks: every refusal is one line naming the field, exit 2,
before any database is touched (DATABASE_URL is unset in these tests)."""

from __future__ import annotations

import pytest

from devtools import tenant

ARN = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:micro-agent/dev/tenants/t-1-AbCdEf"


@pytest.fixture(autouse=True)
def no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)


def refusal(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one line ``main`` prints on stderr when it refuses ``argv`` with exit 2."""
    code: object
    try:
        code = tenant.main(argv)
    except SystemExit as exited:  # argparse's errors exit from inside
        code = exited.code
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_without_arguments_it_prints_a_usage_line_naming_the_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = refusal(capsys, [])
    assert line.startswith("usage: nox -s tenant -- mode TENANT dry_run|live")
    for command in ("show TENANT", "sender TENANT", "resume TENANT"):
        assert command in line


def test_an_unknown_command_is_one_line_naming_the_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = refusal(capsys, ["frobnicate", "t-1"])
    assert "invalid choice: 'frobnicate'" in line
    assert "'mode', 'show', 'sender', 'resume'" in line


@pytest.mark.parametrize("mode", ["LIVE", "true", " live", "dry-run", ""])
def test_a_mode_other_than_dry_run_or_live_is_refused_naming_the_field(
    capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    line = refusal(capsys, ["mode", "t-1", mode])
    assert line == f"tenant: dispatch_mode: expected dry_run or live (exactly), got {mode!r}"


def test_a_missing_mode_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = refusal(capsys, ["mode", "t-1"])
    assert "the following arguments are required: dry_run|live" in line


def test_a_malformed_tenant_id_is_refused_naming_the_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = refusal(capsys, ["show", "t 1; DROP TABLE tenants"])
    assert line.startswith("tenant: tenantId: expected a tenant id")


def test_an_unknown_channel_is_refused_naming_the_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = refusal(capsys, ["resume", "t-1", "sms"])
    assert line == "tenant: channel: expected one of whatsapp, email, calendar, got 'sms'"


def test_valid_arguments_without_a_database_say_how_to_run_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = refusal(capsys, ["mode", "t-1", "live"])
    assert line == "DATABASE_URL is not set: run this through `nox -s tenant`"


# --- what a sender must be -------------------------------------------------------------------


def test_a_whatsapp_sender_is_a_phone_number_id_with_its_secret() -> None:
    tenant.check_sender("whatsapp", "106540352242922", ARN, None)


@pytest.mark.parametrize("sender", ["+5511987654321", "1065-4035", "abc", ""])
def test_a_whatsapp_sender_must_be_digits(sender: str) -> None:
    with pytest.raises(tenant.TenantCommandError) as refused:
        tenant.check_sender("whatsapp", sender, ARN, None)
    assert refused.value.field == "sender"
    assert "phone number id (digits only" in str(refused.value)


def test_a_whatsapp_sender_needs_a_secret_arn() -> None:
    with pytest.raises(tenant.TenantCommandError) as refused:
        tenant.check_sender("whatsapp", "106540352242922", None, None)
    assert refused.value.field == "--secret-arn"
    assert "micro-agent/<stack>/tenants/" in str(refused.value)


@pytest.mark.parametrize(
    "arn",
    [
        "micro-agent/dev/tenants/t-1",
        "arn:aws:s3:::bucket/key",
        "arn:aws:secretsmanager:sa-east-1:123:secret:x",
    ],
)
def test_a_whatsapp_secret_must_be_a_secrets_manager_arn(arn: str) -> None:
    with pytest.raises(tenant.TenantCommandError) as refused:
        tenant.check_sender("whatsapp", "106540352242922", arn, None)
    assert refused.value.field == "--secret-arn"


@pytest.mark.parametrize("channel", ["email", "calendar"])
def test_an_email_sender_is_an_address(channel: str) -> None:
    tenant.check_sender(channel, "vendas@acme.com.br", None, "tenant-acme")


@pytest.mark.parametrize("sender", ["vendas", "vendas@", "@acme.com.br", "vendás@acme.com.br"])
def test_an_email_sender_that_is_not_an_address_is_refused(sender: str) -> None:
    with pytest.raises(tenant.TenantCommandError) as refused:
        tenant.check_sender("email", sender, None, None)
    assert refused.value.field == "sender"


def test_an_email_sender_has_no_secret() -> None:
    with pytest.raises(tenant.TenantCommandError) as refused:
        tenant.check_sender("email", "vendas@acme.com.br", ARN, None)
    assert refused.value.field == "--secret-arn"


def test_a_configuration_set_is_an_ses_name_and_only_for_email() -> None:
    with pytest.raises(tenant.TenantCommandError) as bad_name:
        tenant.check_sender("calendar", "vendas@acme.com.br", None, "tenant acme")
    with pytest.raises(tenant.TenantCommandError) as on_whatsapp:
        tenant.check_sender("whatsapp", "106540352242922", ARN, "tenant-acme")
    assert bad_name.value.field == on_whatsapp.value.field == "--configuration-set"
