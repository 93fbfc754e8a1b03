"""Typed errors of the sensor package."""


class SensorError(Exception):
    """Base of every error the sensor reports to a user (printed without traceback)."""


class BPFUnavailableError(SensorError):
    """BPF programs cannot be loaded or attached on this machine."""


class ConfigError(SensorError):
    """A configuration file is malformed; the message names the file."""
