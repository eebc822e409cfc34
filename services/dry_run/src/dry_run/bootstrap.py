"""Builds the function's dependencies in one place, once per container (cosmicpython's
``bootstrap``): the settings from the environment, then the connection provider from them, and
the live senders only when a live tenant first runs.

A test builds the same graph from a dict: ``build({"DATABASE_URL": ...})``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dry_run.connection import ConnectionProvider
from dry_run.exceptions import SettingsError
from dry_run.settings import LiveSettings, Settings
from pgconn import Connector

if TYPE_CHECKING:
    from dry_run.live import LiveRuntime

APPLICATION_NAME = "micro-agent-dry-run"

SecretFetcher = Callable[[str], Mapping[str, Any]]


class AwsClients:
    """The live senders' boto3 clients, made one at a time and reused while warm.

    A container's first live sends run on several threads at once, and boto3 makes clients
    from its default session, which is not thread-safe: every client is made under one lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    def client(self, service: str, make: Callable[[], Any]) -> Any:
        """The container's client for ``service``, made by ``make`` on first use."""
        with self._lock:
            if service not in self._clients:
                self._clients[service] = make()
            return self._clients[service]

    def secretsmanager(self) -> Any:
        """Secrets Manager (tenants' WhatsApp tokens, the unsubscribe signing key)."""

        def make() -> Any:
            import boto3  # noqa: PLC0415 - boto3 loads only for a live run

            return boto3.client("secretsmanager")

        return self.client("secretsmanager", make)

    def sesv2(self) -> Any:
        """SES v2 with the sender's settings (one attempt, short timeouts)."""
        from dry_run.senders.email import default_client_factory  # noqa: PLC0415

        return self.client("sesv2", default_client_factory)

    def fetch_secret(self, arn: str) -> Mapping[str, Any]:
        """A JSON secret's value."""
        from pgconn import fetch_secret  # noqa: PLC0415

        return fetch_secret(arn, self.secretsmanager())


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_live_runtime(
    settings: Settings,
    *,
    fetch_secret: SecretFetcher | None = None,
    ses_client_factory: Callable[[], Any] | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> LiveRuntime:
    """The live senders and their settings; imports the send path (live tenants only).

    ``fetch_secret`` and ``ses_client_factory`` default to the container's AWS clients.
    """
    from dry_run.live import LiveRuntime  # noqa: PLC0415 - the send path loads lazily
    from dry_run.policy import Channel  # noqa: PLC0415
    from dry_run.senders import Sender  # noqa: PLC0415
    from dry_run.senders.email import SesSender  # noqa: PLC0415
    from dry_run.senders.whatsapp import TokenCache, WhatsAppSender, new_pool  # noqa: PLC0415

    live: LiveSettings = settings.live
    aws = AwsClients()
    fetch = fetch_secret or aws.fetch_secret
    whatsapp = WhatsAppSender(
        live.graph_url,
        live.api_version,
        TokenCache(lambda arn, _client: fetch(arn)),
        pool=new_pool(maxsize=live.concurrency),
    )
    senders: dict[Channel, Sender] = {"whatsapp": whatsapp}
    if live.unsubscribe_ready:
        assert live.unsubscribe_url is not None
        assert live.unsubscribe_secret_arn is not None
        key = fetch(live.unsubscribe_secret_arn).get("signingKey")
        if not isinstance(key, str) or not key:
            raise SettingsError(
                f"secret {live.unsubscribe_secret_arn} has no signingKey: store "
                '{"signingKey": "<at least 16 random bytes, base64>"} in it'
            )
        try:
            ses = SesSender(
                ses_client_factory or aws.sesv2,
                unsubscribe_base_url=live.unsubscribe_url,
                signing_key=key.encode(),
                clock=clock,
            )
        except ValueError as exc:  # e.g. a signing key shorter than the minimum
            raise SettingsError(f"{live.unsubscribe_secret_arn}: {exc}") from None
        senders |= {"email": ses, "calendar": ses}
    return LiveRuntime(
        senders=senders,
        sandbox=settings.sandbox_recipients,
        unsubscribe_ready=live.unsubscribe_ready,
        concurrency=live.concurrency,
        secrets_prefix=live.secrets_prefix,
        configuration_set=live.configuration_set,
    )


@dataclass
class Dependencies:
    """What an invocation needs besides its event, its context and the clock."""

    settings: Settings
    connections: ConnectionProvider
    live_factory: Callable[[Settings], LiveRuntime] = build_live_runtime
    _live: LiveRuntime | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def live_runtime(self) -> LiveRuntime:
        """The live senders, built on the first live run and reused while warm."""
        with self._lock:
            if self._live is None:
                self._live = self.live_factory(self.settings)
            return self._live

    def close(self) -> None:
        """Close the cached connection and senders (tests; a container never needs to)."""
        self.connections.close()
        if self._live is not None:
            self._live.close()
            self._live = None


def build(environ: Mapping[str, str]) -> Dependencies:
    """The dependency graph for an environment; SettingsError names a bad variable."""
    settings = Settings.from_environ(environ)
    connector = Connector(settings.database, application_name=APPLICATION_NAME)
    return Dependencies(settings=settings, connections=ConnectionProvider(connector))
