"""Compatibility name: ``sensor.recording.writer.Recorder`` is ``sensor.recording.Recorder``."""
from sensor.recording.recorder import Recorder

__all__ = ["Recorder"]
