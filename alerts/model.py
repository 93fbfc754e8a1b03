"""The alert: Falco's JSON output plus a uuid, built from a rule match."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
import uuid as _uuid
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from alerts.errors import AlertModelError
from alerts.priority import normalize_priority
from rules.fields import CONTEXT_FIELDS


#: Prefix of netvigil's own keys inside output_fields (Falco consumers ignore them).
NETVIGIL_PREFIX = "netvigil."
SUPPRESSED_COUNT = "netvigil.suppressed_count"
#: The alert's uuid again, inside output_fields: falcosidekick replaces the top-level
#: `uuid` of what it forwards but passes output_fields through, so receivers behind it
#: deduplicate on this key (written by to_dict(), derived from `uuid`, never stored twice).
ALERT_ID = "netvigil.alert_id"


def format_time_ns(time_ns: int) -> str:
    """RFC 3339 UTC timestamp with nanoseconds, as Falco writes it ("...T23:31:56.746609046Z")."""
    seconds, nanos = divmod(int(time_ns), 1_000_000_000)
    base = _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


_TIME_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch from an RFC 3339 timestamp (inverse of format_time_ns)."""
    m = _TIME_RE.match(text)
    if not m:
        raise AlertModelError(f"bad alert time {text!r} (expected RFC 3339)")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    base = _dt.datetime.fromisoformat(m.group(1) + zone)
    nanos = int((m.group(2) or "0").ljust(9, "0"))
    return int(base.timestamp()) * 1_000_000_000 + nanos


def falco_output_prefix(time_ns: int, priority: str) -> str:
    """The "HH:MM:SS.nnnnnnnnn: Priority " Falco puts before a rule's rendered output."""
    seconds, nanos = divmod(int(time_ns), 1_000_000_000)
    clock = _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc).strftime("%H:%M:%S")
    return f"{clock}.{nanos:09d}: {priority} "


def _jsonable(value: Any) -> Any:
    """Keep JSON-typed values (str/int/float/bool/None/list/dict) as they are; stringify others."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


def enforcement_fields(enforcement: Any) -> dict[str, Any]:
    """output_fields describing an EnforcementRequest (duck-typed), prefixed `netvigil.enforce.`."""
    if enforcement is None:
        return {}
    out: dict[str, Any] = {}
    for attr in ("action", "mode", "target", "scope", "ttl_s", "protocol", "cidrs", "ports"):
        if hasattr(enforcement, attr):
            out[f"netvigil.enforce.{attr}"] = _jsonable(getattr(enforcement, attr))
    return out


@dataclasses.dataclass(frozen=True)
class Alert:
    """One alert. `to_dict()` is Falco's JSON output (plus `uuid`)."""

    time_ns: int
    rule: str
    priority: str
    output: str
    output_fields: Mapping[str, Any]
    hostname: str
    source: str = "syscall"
    tags: tuple[str, ...] = ()
    uuid: str = dataclasses.field(default_factory=lambda: str(_uuid.uuid4()))

    @classmethod
    def from_match(cls, match: Any, hostname: str, extras: Mapping[str, Any] | None = None) -> Alert:
        """Build an alert from a `rules.match.RuleMatch` (only its documented attributes).

        `output` is Falco's: "HH:MM:SS.nnnnnnnnn: Priority " + the rendered rule output.
        output_fields = the match's output_fields, plus process/container/pod context from
        the event, plus the enforcement taken (`netvigil.enforce.*`), plus `extras`.
        """
        try:
            fields: dict[str, Any] = {k: _jsonable(v) for k, v in dict(match.output_fields).items()}
            event = getattr(match, "event", None) or {}
            for name in CONTEXT_FIELDS:
                if name not in fields and name in event:
                    fields[name] = _jsonable(event[name])
            fields.update(enforcement_fields(getattr(match, "enforcement", None)))
            if extras:
                fields.update({str(k): _jsonable(v) for k, v in extras.items()})
            priority = normalize_priority(match.priority) or str(match.priority)
            prefix = falco_output_prefix(int(match.time_ns), priority)
            output = str(match.output)
            return cls(
                time_ns=int(match.time_ns), rule=str(match.rule), priority=priority,
                output=output if output.startswith(prefix) else prefix + output,
                output_fields=fields, hostname=hostname,
                source=str(getattr(match, "source", "syscall") or "syscall"),
                tags=tuple(str(t) for t in (getattr(match, "tags", ()) or ())),
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise AlertModelError(f"cannot build an alert from {type(match).__name__}: {exc}") from exc

    @property
    def time(self) -> str:
        """RFC 3339 time with nanoseconds."""
        return format_time_ns(self.time_ns)

    @property
    def message(self) -> str:
        """The rule's rendered output without Falco's "HH:MM:SS.nnnnnnnnn: Priority " prefix
        (for views that show the time and priority in columns of their own)."""
        return self.output.removeprefix(falco_output_prefix(self.time_ns, self.priority))

    @property
    def suppressed_count(self) -> int:
        """How many identical alerts this one stands for beyond itself (noise control)."""
        return int(self.output_fields.get(SUPPRESSED_COUNT, 0) or 0)

    def to_dict(self) -> dict[str, Any]:
        """Falco's JSON output, key order as Falco writes it, plus `uuid`."""
        return {
            "hostname": self.hostname,
            "output": self.output,
            "priority": self.priority,
            "rule": self.rule,
            "source": self.source,
            "tags": list(self.tags),
            "time": self.time,
            "output_fields": {**self.output_fields, ALERT_ID: self.uuid},
            "uuid": self.uuid,
        }

    @cached_property
    def json_bytes(self) -> bytes:
        """`to_dict()` as compact UTF-8 JSON (cached: sinks and the spool share it)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Inverse of `to_dict()` (used by the spool; `time` keeps its nanoseconds)."""
        try:
            return cls(
                time_ns=parse_time(str(data["time"])), rule=str(data["rule"]),
                priority=str(data["priority"]), output=str(data["output"]),
                output_fields={k: v for k, v in dict(data.get("output_fields") or {}).items()
                               if k != ALERT_ID},
                hostname=str(data.get("hostname", "")), source=str(data.get("source", "syscall")),
                tags=tuple(str(t) for t in data.get("tags") or ()), uuid=str(data["uuid"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AlertModelError(f"not an alert: missing or bad field {exc}") from exc

    @classmethod
    def from_json(cls, raw: bytes | str) -> Alert:
        """Decode one alert from its JSON text."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AlertModelError(f"not an alert: invalid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise AlertModelError("not an alert: JSON is not an object")
        return cls.from_dict(data)

    def with_changes(self, **changes: Any) -> Alert:
        """A copy with some fields replaced (the cached JSON is not carried over)."""
        return dataclasses.replace(self, **changes)
