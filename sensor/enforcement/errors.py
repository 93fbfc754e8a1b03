"""Typed errors of the enforcement package."""
from __future__ import annotations

from sensor.errors import SensorError


class EnforcementError(SensorError):
    """Base of every enforcement error shown to a user."""


class BPFSyscallError(EnforcementError):
    """A bpf(2) command failed; carries the errno."""

    def __init__(self, what: str, errno_: int) -> None:
        import os

        super().__init__(f"{what}: {os.strerror(errno_)}")
        self.errno = errno_


class NotInstalledError(EnforcementError):
    """No pinned enforcement state exists under the base path."""


class InvalidEntryError(EnforcementError):
    """A deny entry or safety entry is malformed (bad CIDR, port, scope...)."""


class ConfigError(EnforcementError):
    """The `enforce:` configuration section is malformed; names the source file."""


class AttachError(EnforcementError):
    """Attaching or detaching a program to a cgroup or interface failed."""


class InterfaceNotFoundError(AttachError):
    """The network interface named for tc attachment does not exist."""
