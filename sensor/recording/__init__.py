"""netvigil recording: msgpack segment files with a hash chain (see docs/forensics.md).

Public API: ``Recorder`` (write), ``SegmentReader`` / ``read_recordings`` (read back).
"""
from sensor.recording.format import DEFAULT_DIRECTORY
from sensor.recording.recorder import Recorder

__all__ = ["DEFAULT_DIRECTORY", "Recorder"]
