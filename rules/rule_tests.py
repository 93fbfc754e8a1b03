"""``netvigil rules test``: run rules over JSON-lines events, compare with expected alerts.

Expected alerts are JSON lines (or a YAML list) of ``{"rule": NAME, "evt.num": N}``; N is
the event's ``evt.num``, or its 1-based line number in the events file when it has none.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from rules.engine import RuleSet
from rules.errors import EventsFileError

Alert = tuple[str, int]


def read_events(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, event) for every non-blank line of a JSON-lines file."""
    try:
        fh = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise EventsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EventsFileError(f"{path}:{lineno}:{exc.colno}: invalid JSON: "
                                          f"{exc.msg}") from None
                if not isinstance(event, dict):
                    raise EventsFileError(f"{path}:{lineno}: an event must be a JSON object")
                yield lineno, event
        except UnicodeDecodeError:
            raise EventsFileError(f"{path}: not UTF-8 text") from None


def run(ruleset: RuleSet, events: Path) -> list[Alert]:
    """(rule, evt.num or line) for every match, in event order."""
    out: list[Alert] = []
    for lineno, event in read_events(events):
        num = event.get("evt.num")
        key = num if isinstance(num, int) and not isinstance(num, bool) else lineno
        out.extend((m.rule, key) for m in ruleset.evaluate(event))
    return out


def read_expected(path: Path) -> list[Alert]:
    """Expected alerts from JSON lines or a YAML list of {rule, evt.num}."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EventsFileError(f"{path}: cannot read: {exc}") from None
    entries: list[tuple[str, Any]] = []
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text) or []
        except yaml.YAMLError as exc:
            raise EventsFileError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, list):
            raise EventsFileError(f"{path}: expected a YAML list of {{rule, evt.num}}")
        entries = [(f"{path}: item {i + 1}", d) for i, d in enumerate(data)]
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    entries.append((f"{path}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise EventsFileError(f"{path}:{lineno}:{exc.colno}: invalid JSON: "
                                          f"{exc.msg}") from None
    out = []
    for where, d in entries:
        if not isinstance(d, dict) or not isinstance(d.get("rule"), str) or \
                not isinstance(d.get("evt.num"), int):
            raise EventsFileError(f"{where}: each expected alert is {{\"rule\": NAME, "
                                  "\"evt.num\": N}")
        out.append((d["rule"], d["evt.num"]))
    return out


def diff(expected: list[Alert], actual: list[Alert]) -> list[str]:
    """Lines describing missing (-) and unexpected (+) alerts; empty when they agree."""
    missing = Counter(expected) - Counter(actual)
    extra = Counter(actual) - Counter(expected)
    lines = [f"- expected, did not fire: {r!r} on evt.num {n}"
             for (r, n) in sorted(missing.elements(), key=lambda a: (a[1], a[0]))]
    lines += [f"+ fired, not expected:   {r!r} on evt.num {n}"
              for (r, n) in sorted(extra.elements(), key=lambda a: (a[1], a[0]))]
    return lines


def to_jsonl(alerts: list[Alert]) -> str:
    """Alerts in the expected-file format."""
    return "".join(json.dumps({"rule": r, "evt.num": n}) + "\n" for r, n in alerts)
