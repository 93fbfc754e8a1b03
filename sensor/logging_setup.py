"""The agent's logs on stderr: timestamps and levels, as text or one JSON object per line.

Text:  `2026-12-01T22:31:04.123Z WARNING sensor.reload: reload refused: rules.yaml:3:5: ...`
JSON:  `{"time": "2026-12-01T22:31:04.123456Z", "level": "warning", "logger": "sensor.reload",
        "msg": "reload refused: ..."}` (plus `error` with the traceback of an unexpected failure,
        and any `extra=` fields a caller adds).

`notice()` is how the commands tell the operator something that is not a log line in
text mode (`netvigil ... sensor running`): printed as today on a terminal, a log record
in JSON mode so stderr stays one object per line.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

FORMATS = ("text", "json")
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _timestamp(created: float, digits: int) -> str:
    whole = int(created)
    frac = f"{created - whole:.{digits}f}"[1:]
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + frac + "Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _timestamp(record.created, 6), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`<UTC time, ms> <LEVEL> <logger>: <message>`."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record.created, 3)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _OwnHandler(logging.StreamHandler):
    """The stderr handler `configure` installs (so a later call replaces only it)."""


def configure(fmt: str = "text", level: str | int = logging.WARNING, stream: TextIO | None = None) -> None:
    """(Re)configure the root logger: one stderr handler with the chosen format.

    Replaces the handler an earlier call installed; handlers others added (a test's log
    capture, an embedding program's) stay.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}")
    handler = _OwnHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _OwnHandler) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else getattr(logging, level.upper()))


@contextmanager
def streams_moved(old: TextIO, new: TextIO) -> Iterator[None]:
    """While inside, the root logger's handlers that write to `old` write to `new` instead
    (a live view's stderr proxy: log lines then print above the view, not through it)."""
    moved = [h for h in logging.getLogger().handlers
             if isinstance(h, logging.StreamHandler) and h.stream is old]
    for handler in moved:
        handler.setStream(new)
    try:
        yield
    finally:
        for handler in moved:
            handler.setStream(old)


def json_logs() -> bool:
    """Whether the root logger writes JSON lines."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def notice(message: str, *, level: int = logging.INFO, end: str = "\n", **fields: Any) -> None:
    """Tell the operator something: a plain stderr line in text mode, a JSON record (whatever
    the log level) in JSON mode."""
    if json_logs():
        logger = logging.getLogger("netvigil")
        record = logger.makeRecord(logger.name, level, "", 0, message.strip(), (), None, extra=fields)
        for handler in logging.getLogger().handlers:
            handler.handle(record)
    else:
        print(message, end=end, file=sys.stderr, flush=True)


def report_error(message: str) -> None:
    """A user error that ends the command (printed `netvigil: error: ...` in text mode)."""
    if json_logs():
        logging.getLogger("netvigil").error(message)
    else:
        print(f"netvigil: error: {message}", file=sys.stderr)


def add_arguments(parser: argparse.ArgumentParser, *, inherited: bool = False) -> None:
    """`--log-format` and `--log-level` (on a sub-command: `inherited=True`, so they may
    come before or after the sub-command's name)."""
    default = argparse.SUPPRESS if inherited else None
    parser.add_argument("--log-format", choices=FORMATS, default=default,
                        help="stderr logs as text (default) or one JSON object per line")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=default,
                        help="least severe level logged (default: warning; -v: debug)")


def configure_from_args(args: argparse.Namespace, fmt: str | None = None, level: str | None = None) -> None:
    """Logging from the command line, falling back to `fmt`/`level` (the config file), then
    text at warning (debug with -v)."""
    chosen = getattr(args, "log_level", None) or ("debug" if getattr(args, "verbose", False) else level)
    configure(getattr(args, "log_format", None) or fmt or "text", chosen or "warning")
