"""Typed errors of the recording package."""
from __future__ import annotations

from sensor.errors import SensorError


class RecordingError(SensorError):
    """Base of every recording/replay-format error shown to a user."""


class SegmentFormatError(RecordingError):
    """A file is not a readable netvigil segment (bad magic, corrupt header)."""


class RecorderClosedError(RecordingError):
    """The recorder was used after close()."""


class DecodeError(RecordingError):
    """A record is well-framed but its content does not decode (unknown ids...)."""
