"""Typed errors of the replay package."""
from __future__ import annotations

from sensor.errors import SensorError


class ReplayError(SensorError):
    """A replay cannot run as asked (bad path, bad time, bad option combination)."""
