"""Dead-letter file: alerts a sink refused for good, one JSON object per line, with the reason.

Each line: {"dead_lettered_at": RFC 3339, "sink": name, "reason": text, "alert": {Falco JSON}}
(or "record": text for a spool record that could not be decoded). Lines are fsynced,
except on the sensor's hot path (spool full), where an fsync per alert would stall it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from pathlib import Path
from typing import Any

from alerts.errors import SpoolError
from alerts.model import Alert


class DeadLetterFile:
    """Append-only JSON-lines file of refused alerts for one sink."""

    def __init__(self, path: Path, sink: str) -> None:
        self.path = Path(path)
        self._sink = sink
        self._lock = threading.Lock()

    def write(self, reason: str, alert: Alert | None = None, raw: bytes | None = None,
              *, sync: bool = True) -> None:
        """Record a refused alert (or undecodable raw record) and why."""
        entry: dict[str, Any] = {
            "dead_lettered_at": _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z"),
            "sink": self._sink, "reason": reason,
        }
        if alert is not None:
            entry["alert"] = alert.to_dict()
        if raw is not None:
            entry["record"] = raw.decode("utf-8", "replace")
        line = json.dumps(entry, ensure_ascii=False).encode() + b"\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                    if sync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise SpoolError(f"dead-letter file {self.path}: {exc.strerror}") from None

    def read(self) -> list[dict[str, Any]]:
        """All entries (for tests and `netvigil sinks` tooling)."""
        try:
            return [json.loads(line) for line in self.path.read_text().splitlines() if line]
        except FileNotFoundError:
            return []
