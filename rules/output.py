"""Rule output templates: ``%proc.name``, ``%proc.aname[2]``, rendered as Falco does."""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rules.errors import Position, RuleTypeError, UnknownNameError
from rules.falco_fields import is_falco_only
from rules.fields import CONTEXT_FIELDS, FIELDS_BY_NAME, field_reader

NA = "<NA>"
_REF = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+)(?:\[([^\]]*)\])?")


def format_evt_time(ns: int) -> str:
    """Falco's %evt.time: time of day (UTC) with nanoseconds, e.g. 13:45:01.123456789."""
    secs, frac = divmod(int(ns), 1_000_000_000)
    return time.strftime("%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}"


def _text(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}:{v}" for k, v in value.items()) or NA
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or NA
    return str(value)


def _getter(name: str, arg: str | None) -> Callable[[Mapping], Any]:
    """Read one output field's value from an event (None when absent/unsupported)."""
    spec = FIELDS_BY_NAME.get(name)
    if spec is None:
        return lambda e: None
    if spec.any_of:  # either end: the first one present
        readers = tuple(field_reader(s) for s in spec.any_of)
        return lambda e: next((v for v in (r(e.get) for r in readers) if v is not None), None)
    if spec.type == "list":
        if arg is None:
            return lambda e: e.get(name)
        i = int(arg)
        if i == 0:
            own = "proc.name" if name == "proc.aname" else "proc.pid"
            return lambda e: e.get(own)

        def ancestor(e: Mapping) -> Any:
            values = e.get(name)
            return values[i - 1] if isinstance(values, (list, tuple)) and i - 1 < len(values) \
                else None
        return ancestor
    if spec.key_of:
        key, source = arg or "", spec.key_of
        return lambda e: (e.get(source) or {}).get(key) \
            if isinstance(e.get(source), Mapping) else None
    read = field_reader(name)
    return lambda e: read(e.get)


@dataclass(frozen=True)
class OutputTemplate:
    """A parsed output template; ``render(event)`` -> (text, output_fields)."""

    text: str
    parts: tuple[tuple[str, str | None, Callable[[Mapping], Any] | None], ...]
    unsupported: tuple[str, ...] = ()

    def render(self, event: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        out: list[str] = []
        fields: dict[str, Any] = {}
        for literal, key, get in self.parts:
            out.append(literal)
            if get is None:
                continue
            value = get(event)
            if key == "evt.time" and isinstance(value, int):
                out.append(format_evt_time(value))
            else:
                out.append(_text(value))
            fields[key] = value
        for key in CONTEXT_FIELDS:
            if key not in fields:
                value = event.get(key)
                if value is not None:
                    fields[key] = value
        return "".join(out), fields


def parse_output(text: str, where: Callable[[int], Position | None]) -> OutputTemplate:
    """Parse ``%field`` references; unknown fields are errors, Falco-only fields render <NA>."""
    from rules.checker import did_you_mean
    parts = []
    unsupported = []
    last = 0
    for m in _REF.finditer(text):
        name, arg = m.group(1), m.group(2)
        end = m.end()
        key = name + (f"[{arg}]" if arg is not None else "")
        spec = FIELDS_BY_NAME.get(name)
        if spec is None:
            if not is_falco_only(name) and name not in ("container.info",):
                raise UnknownNameError(f"unknown field %{key} in output", where(m.start()),
                                       hint=did_you_mean(name, FIELDS_BY_NAME))
            unsupported.append(key)
            get = _getter("", None)
        else:
            if arg is not None and not spec.arg:
                raise RuleTypeError(f"%{name} takes no [argument]", where(m.start()))
            if spec.arg == "index" and arg is not None and not arg.isdigit():
                raise RuleTypeError(f"%{key}: the index must be a number", where(m.start()))
            if spec.arg == "key" and not arg:
                raise RuleTypeError(f"%{name} needs a key: %{name}[KEY]", where(m.start()))
            get = _getter(name, arg)
        parts.append((text[last:m.start()], key, get))
        last = end
    parts.append((text[last:], None, None))
    return OutputTemplate(text, tuple(parts), tuple(unsupported))
