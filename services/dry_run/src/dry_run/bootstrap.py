"""Builds the function's dependencies in one place, once per container (cosmicpython's
``bootstrap``): the settings from the environment, then the connection provider from them.

A test builds the same graph from a dict: ``build({"DATABASE_URL": ...})``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dry_run.connection import ConnectionProvider
from dry_run.settings import Settings
from pgconn import Connector

APPLICATION_NAME = "micro-agent-dry-run"


@dataclass(frozen=True)
class Dependencies:
    """What an invocation needs besides its event, its context and the clock."""

    settings: Settings
    connections: ConnectionProvider

    def close(self) -> None:
        """Close the cached connection (tests; a container never needs to)."""
        self.connections.close()


def build(environ: Mapping[str, str]) -> Dependencies:
    """The dependency graph for an environment; SettingsError names a bad variable."""
    settings = Settings.from_environ(environ)
    connector = Connector(settings.database, application_name=APPLICATION_NAME)
    return Dependencies(settings=settings, connections=ConnectionProvider(connector))
