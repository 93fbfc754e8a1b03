"""The `record:` section of the netvigil config file.

```yaml
record:
  enabled: true
  dir: /var/lib/netvigil/recordings
  max_segment_size: 64MiB     # rotate a segment at this size (bytes or 64MiB/500MB...)
  max_segment_age: 1h         # ... or at this age (seconds or 30s/10m/1h/1d)
  max_total_size: 1GiB        # prune oldest segments beyond this
  flush_interval: 1s          # how much a crash can lose at most
  key_file: /etc/netvigil/recording.key   # optional: keyed (MAC) hash chain
  fsync: false                # fsync every flush (survives power loss, costs IO)
```
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rules import units
from rules.userfile import at_line
from sensor.recording.errors import RecordingError
from sensor.recording.format import DEFAULT_DIRECTORY

KEYS = ("enabled", "dir", "max_segment_size", "max_segment_age", "max_total_size",
        "flush_interval", "key_file", "fsync",
        # accepted spellings of the sensor's own config keys
        "max_segment_bytes", "max_total_bytes")

class RecordConfigError(RecordingError):
    """A bad value in the `record:` section (the message names the file and key)."""


@dataclass(frozen=True)
class RecordConfig:
    """Recorder settings; ``recorder_kwargs()`` feeds ``Recorder(directory, ...)``."""

    enabled: bool = True
    directory: Path = DEFAULT_DIRECTORY
    max_segment_bytes: int = 64 << 20
    max_segment_age_s: float = 3600.0
    max_total_bytes: int = 1 << 30
    flush_interval_s: float = 1.0
    key_file: Path | None = None
    fsync: bool = False

    def recorder_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for Recorder (reads the key file)."""
        key = None
        if self.key_file is not None:
            try:
                key = self.key_file.read_bytes().strip()
            except OSError as exc:
                raise RecordConfigError(f"record.key_file {self.key_file}: {exc.strerror}") from None
            if not key:
                raise RecordConfigError(f"record.key_file {self.key_file}: file is empty")
        return {"max_segment_bytes": self.max_segment_bytes,
                "max_segment_age_s": self.max_segment_age_s,
                "max_total_bytes": self.max_total_bytes,
                "flush_interval_s": self.flush_interval_s, "key": key, "fsync": self.fsync}


def parse_size(value: Any, where: str) -> int:
    """Bytes from an int or a string like '64MiB' / '500MB' (rules/units.py grammar)."""
    return units.size_in(value, where, RecordConfigError)


def parse_duration(value: Any, where: str) -> float:
    """Seconds from a number or a string like '10m' / '1h' / '1d' (rules/units.py grammar)."""
    return units.duration_in(value, where, RecordConfigError)


def parse_record_config(data: Mapping[str, Any] | None, source: str) -> RecordConfig:
    """The `record:` section of config file ``source`` (None = defaults)."""
    if data is None:
        return RecordConfig()
    if not isinstance(data, Mapping):
        raise RecordConfigError(f"{source}: record: must be a mapping")
    unknown = sorted(set(data) - set(KEYS), key=str)
    if unknown:
        raise RecordConfigError(f"{source}: record: unknown key(s) {', '.join(map(str, unknown))}"
                                f"{at_line(data, unknown[0])}; known: {', '.join(KEYS[:8])}")
    where = f"{source}: record."
    enabled = data.get("enabled", True)
    fsync = data.get("fsync", False)
    for key, value in (("enabled", enabled), ("fsync", fsync)):
        if not isinstance(value, bool):
            raise RecordConfigError(f"{where}{key}: expected true or false, got {value!r}"
                                    f"{at_line(data, key)}")
    seg = data.get("max_segment_size", data.get("max_segment_bytes", 64 << 20))
    total = data.get("max_total_size", data.get("max_total_bytes", 1 << 30))
    cfg = RecordConfig(
        enabled=enabled,
        directory=Path(str(data.get("dir", DEFAULT_DIRECTORY))),
        max_segment_bytes=parse_size(seg, where + "max_segment_size"),
        max_segment_age_s=parse_duration(data.get("max_segment_age", 3600),
                                         where + "max_segment_age"),
        max_total_bytes=parse_size(total, where + "max_total_size"),
        flush_interval_s=parse_duration(data.get("flush_interval", 1.0),
                                        where + "flush_interval"),
        key_file=Path(str(data["key_file"])) if data.get("key_file") else None,
        fsync=fsync,
    )
    if cfg.max_total_bytes < cfg.max_segment_bytes:
        raise RecordConfigError(f"{where}max_total_size ({cfg.max_total_bytes} bytes) is "
                                f"smaller than max_segment_size ({cfg.max_segment_bytes})")
    return cfg
