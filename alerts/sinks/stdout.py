"""stdout sink: a readable line per alert on a terminal, Falco JSON lines otherwise."""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TextIO

from rich.color import ColorSystem
from rich.style import Style

from alerts.errors import AlertsConfigError, RetryableDeliveryError
from alerts.model import Alert
from alerts.priority import PRIORITY_STYLES
from alerts.sinks.base import Sink, check_keys

FORMATS = ("auto", "text", "json")
KEYS = {"format"}



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
        style = Style.parse(PRIORITY_STYLES.get(alert.priority, "none"))
        coloured = style.render(alert.priority, color_system=ColorSystem.STANDARD)
        output = output.replace(f": {alert.priority} ", f": {coloured} ", 1)
    return f"{output} [rule: {alert.rule}]"


class StdoutSink(Sink):
    """Writes alerts to a stream (stdout by default)."""

    def __init__(self, name: str, settings: StdoutSettings, stream: TextIO | None = None) -> None:
        super().__init__(name)
        self._stream = stream if stream is not None else sys.stdout
        isatty = getattr(self._stream, "isatty", lambda: False)()
        self._text = settings.format == "text" or (settings.format == "auto" and isatty)
        self._colour = self._text and isatty and not os.environ.get("NO_COLOR")
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
