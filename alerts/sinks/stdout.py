"""stdout sink: a readable line per alert on a terminal, Falco JSON lines otherwise."""
from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TextIO

from alerts.errors import AlertsConfigError, RetryableDeliveryError
from alerts.model import Alert
from alerts.sinks.base import Sink, check_keys

FORMATS = ("auto", "text", "json")
KEYS = {"format"}

_ANSI = {"Emergency": "\033[1;31m", "Alert": "\033[1;31m", "Critical": "\033[1;31m",
         "Error": "\033[31m", "Warning": "\033[33m", "Notice": "\033[36m",
         "Informational": "\033[32m", "Debug": "\033[2m"}
_RESET = "\033[0m"


@dataclasses.dataclass(frozen=True)
class StdoutSettings:
    """`format`: auto (text on a terminal, JSON when piped), text or json."""

    format: str = "auto"


def parse_settings(raw: Mapping[str, object], where: str,
                   env: Mapping[str, str] | None = None) -> StdoutSettings:
    """Settings of a `type: stdout` sink."""
    check_keys(raw, KEYS, where)
    fmt = raw.get("format", "auto")
    if fmt not in FORMATS:
        raise AlertsConfigError(f"{where}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return StdoutSettings(format=str(fmt))


def format_text(alert: Alert, colour: bool) -> str:
    """Falco's text line ("HH:MM:SS.nnnnnnnnn: Priority output") plus the rule name."""
    output = alert.output
    prefix = f"{alert.time[11:29]}: {alert.priority} "
    if not output.startswith(prefix):
        output = prefix + output
    if colour:
        coloured = f"{_ANSI.get(alert.priority, '')}{alert.priority}{_RESET}"
        output = output.replace(f": {alert.priority} ", f": {coloured} ", 1)
    return f"{output} [rule: {alert.rule}]"


class StdoutSink(Sink):
    """Writes alerts to a stream (stdout by default)."""

    def __init__(self, name: str, settings: StdoutSettings, stream: TextIO | None = None) -> None:
        super().__init__(name)
        self._stream = stream if stream is not None else sys.stdout
        isatty = getattr(self._stream, "isatty", lambda: False)()
        self._text = settings.format == "text" or (settings.format == "auto" and isatty)
        self._colour = self._text and isatty
        self._lock = threading.Lock()

    def deliver(self, alerts: Sequence[Alert]) -> None:
        lines = [format_text(a, self._colour) if self._text else a.json_bytes.decode()
                 for a in alerts]
        try:
            with self._lock:
                self._stream.write("".join(line + "\n" for line in lines))
                self._stream.flush()
        except (OSError, ValueError) as exc:
            raise RetryableDeliveryError(f"sink '{self.name}': cannot write to stdout: {exc}") from None

    def describe(self) -> str:
        return "stdout (" + ("text" if self._text else "JSON lines") + ")"
