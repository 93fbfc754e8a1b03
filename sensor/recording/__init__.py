"""netvigil recording: msgpack segment files with a hash chain (see docs/forensics.md).

Write with ``Recorder``; read back with ``reader.SegmentReader`` (integrity, damage
reports) and ``decoder.SegmentDecoder`` (records to events), or replay whole recordings
with ``sensor.replay.engine.Replayer``.
"""
from sensor.recording.format import DEFAULT_DIRECTORY
from sensor.recording.recorder import Recorder

__all__ = ["DEFAULT_DIRECTORY", "Recorder"]
