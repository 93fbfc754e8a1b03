"""Typed errors of the alerts package."""
from __future__ import annotations


class AlertsError(Exception):
    """Base of every error the alerts package reports to a user."""


class AlertsConfigError(AlertsError):
    """The `alerts:` section of a config file is invalid (names the file and the sink)."""


class SecretError(AlertsConfigError):
    """A secret named in the config (environment variable or file) cannot be read."""


class AlertModelError(AlertsError):
    """An alert cannot be built from the given match or decoded from JSON."""


class SpoolError(AlertsError):
    """The on-disk spool of a sink cannot be opened, read or written."""


class SpoolFullError(SpoolError):
    """The spool of a sink reached its configured maximum size."""


class DeliveryError(AlertsError):
    """A sink could not take an alert. Messages never contain secrets."""


class RetryableDeliveryError(DeliveryError):
    """A transient failure (network, timeout, 5xx, 408, 429): retry later.

    `retry_after` is the delay the receiver asked for (Retry-After), in seconds, or None.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The receiver rejected the alert for good (4xx other than 408/429): dead-letter it."""
