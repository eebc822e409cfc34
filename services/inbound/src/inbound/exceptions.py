"""Every exception the webhook function raises on purpose, in one place."""

from __future__ import annotations


class InvalidRequestError(ValueError):
    """The HTTP request cannot be read as given (its body is not what it says it is)."""


class InvalidEventError(ValueError):
    """A provider's event is structurally broken; retrying the same bytes can never succeed."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
