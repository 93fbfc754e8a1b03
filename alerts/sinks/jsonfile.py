"""JSON-lines file sink with size-based rotation (alerts.jsonl -> alerts.jsonl.1 ...)."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from alerts.errors import AlertsConfigError, RetryableDeliveryError
from alerts.model import Alert
from alerts.sinks.base import Sink, check_keys
from alerts.units import parse_size

KEYS = {"path", "max_bytes", "backups"}


@dataclasses.dataclass(frozen=True)
class FileSettings:
    """`path`; rotate when the file would exceed `max_bytes`, keeping `backups` old files."""

    path: Path
    max_bytes: int = 100 * 1024 * 1024
    backups: int = 5


def parse_settings(raw: Mapping[str, object], where: str,
                   env: Mapping[str, str] | None = None) -> FileSettings:
    """Settings of a `type: file` sink."""
    check_keys(raw, KEYS, where)
    path = raw.get("path")
    if not isinstance(path, str) or not path:
        raise AlertsConfigError(f"{where}: 'path' (the JSON-lines file) is required")
    backups = raw.get("backups", 5)
    if isinstance(backups, bool) or not isinstance(backups, int) or backups < 0:
        raise AlertsConfigError(f"{where}: backups must be an integer >= 0, got {backups!r}")
    max_bytes = parse_size(raw["max_bytes"], f"{where}: max_bytes") if "max_bytes" in raw \
        else FileSettings.max_bytes
    return FileSettings(path=Path(path), max_bytes=max_bytes, backups=backups)


class JsonFileSink(Sink):
    """Appends one Falco JSON object per line; rotates by size."""

    max_batch = 100

    def __init__(self, name: str, settings: FileSettings) -> None:
        super().__init__(name)
        self._settings = settings
        self._fd: int | None = None
        self._size = 0

    def _open(self) -> int:
        if self._fd is None:
            self._settings.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._settings.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _rotate(self) -> None:
        self.close()
        path, keep = self._settings.path, self._settings.backups
        if keep == 0:
            path.unlink(missing_ok=True)
            return
        for i in range(keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{i}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{i + 1}"))
        if path.exists():
            path.replace(path.with_name(f"{path.name}.1"))

    def deliver(self, alerts: Sequence[Alert]) -> None:
        data = b"".join(a.json_bytes + b"\n" for a in alerts)
        try:
            fd = self._open()
            if self._size and self._size + len(data) > self._settings.max_bytes:
                self._rotate()
                fd = self._open()
            os.write(fd, data)
            self._size += len(data)
        except OSError as exc:
            self.close()
            raise RetryableDeliveryError(
                f"sink '{self.name}': cannot write {self._settings.path}: {exc.strerror}") from None

    def describe(self) -> str:
        return f"file {self._settings.path}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
