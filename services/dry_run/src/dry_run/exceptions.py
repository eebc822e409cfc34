"""Every exception the dry-run function raises on purpose, in one place."""

from __future__ import annotations


class InvalidEventError(ValueError):
    """The event cannot be processed as given; retrying it can never succeed."""

    error_type = "InvalidEvent"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UnknownTenantError(InvalidEventError):
    """The event names a tenant that does not exist."""

    error_type = "UnknownTenant"


class RunIdConflictError(InvalidEventError):
    """The runId already belongs to another tenant."""

    error_type = "RunIdConflict"


class SettingsError(ValueError):
    """A setting is missing or not usable; the message names the variable."""


class NoFreeSlotError(LookupError):
    """Every meeting slot of the search horizon is taken (or none exists in the tenant's zone)."""


class InvalidUnsubscribeTokenError(ValueError):
    """An unsubscribe token was not issued by us under this key; nothing may be written for it."""
