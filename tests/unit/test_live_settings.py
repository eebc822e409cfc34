"""Live settings: a bad one is one line naming the variable, at start-up, never at a send."""

from __future__ import annotations

from typing import Any

import pytest

from dry_run.bootstrap import build_live_runtime
from dry_run.exceptions import SettingsError
from dry_run.settings import LiveSettings, Settings

BASE = {"DATABASE_URL": "postgresql://localhost/x"}


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/unsubscribe",
        "http://localhost.evil.example/unsubscribe",
        "ftp://localhost/unsubscribe",
        "https://user:pw@example.com/unsubscribe",
    ],
)
def test_an_unsubscribe_url_that_links_cannot_use_is_refused_at_start_up(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^UNSUBSCRIBE_URL: expected an https:// URL"):
        LiveSettings.from_environ({"UNSUBSCRIBE_URL": url})


@pytest.mark.parametrize(
    "url", ["https://abc.lambda-url.sa-east-1.on.aws/unsubscribe", "http://127.0.0.1:9/u"]
)
def test_an_https_or_local_unsubscribe_url_is_taken(url: str) -> None:
    assert LiveSettings.from_environ({"UNSUBSCRIBE_URL": url}).unsubscribe_url == url


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WHATSAPP_API_VERSION", "21.0"),
        ("SEND_CONCURRENCY", "0"),
        ("SEND_CONCURRENCY", "33"),
        ("SEND_CONCURRENCY", "many"),
        ("MICRO_AGENT_SANDBOX_RECIPIENTS", "+5511987654321,not-a-phone"),
    ],
)
def test_a_bad_live_setting_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_environ({**BASE, name: value})
    message = str(raised.value)
    assert message.startswith(f"{name}: expected")
    assert "\n" not in message


def test_a_short_signing_key_is_a_settings_error_naming_the_secret() -> None:
    # GIVEN an unsubscribe secret whose key is too short to sign with
    settings = Settings.from_environ(
        {
            **BASE,
            "UNSUBSCRIBE_URL": "https://example.com/u",
            "UNSUBSCRIBE_SECRET_ARN": "arn:aws:secretsmanager:sa-east-1:1:secret:u",
        }
    )

    def fetch(arn: str) -> dict[str, Any]:
        return {"signingKey": "short"}

    # WHEN the live runtime is built THEN a SettingsError names the secret, not the key
    with pytest.raises(SettingsError) as raised:
        build_live_runtime(settings, fetch_secret=fetch)
    assert str(raised.value).startswith("arn:aws:secretsmanager:sa-east-1:1:secret:u: ")
    assert "short" not in str(raised.value)


def test_concurrent_first_uses_make_one_aws_client() -> None:
    import threading
    import time

    from dry_run.bootstrap import AwsClients

    # GIVEN a factory slow enough for threads to overlap in it
    made: list[object] = []

    def make() -> object:
        time.sleep(0.05)
        made.append(object())
        return made[-1]

    clients = AwsClients()
    start = threading.Barrier(8)
    got: list[object] = []

    def use() -> None:
        start.wait()
        got.append(clients.client("sesv2", make))

    # WHEN eight threads ask for it at once
    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN one client was made, and every thread got it
    assert len(made) == 1
    assert got == made * 8
