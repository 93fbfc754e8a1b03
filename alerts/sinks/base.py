"""The sink interface every destination implements, and helpers for their settings."""
from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

from alerts.errors import AlertsConfigError
from alerts.model import Alert


class Sink(abc.ABC):
    """A destination for alerts. `deliver` is called from the sink's own worker thread only.

    `deliver` raises RetryableDeliveryError (try again later) or PermanentDeliveryError
    (the receiver refused these alerts for good); returning means delivered.
    """

    #: How many alerts one `deliver` call may carry (1 = one request per alert).
    max_batch: int = 1

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    def deliver(self, alerts: Sequence[Alert]) -> None:
        """Deliver these alerts, in order."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Short description safe to print (type and where, never a secret)."""

    def close(self) -> None:
        """Release connections and files."""

    def abort(self) -> None:
        """From another thread: unblock a `deliver` stuck on a hanging receiver."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.describe()}>"


def check_keys(raw: Mapping[str, object], allowed: set[str], where: str) -> None:
    """Refuse unknown keys in a sink's settings, naming them."""
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise AlertsConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
