"""Typed errors of the rules package.

Every error a user can cause carries a :class:`Position` when one is known, and its
``str()`` is ``file:line:col: message`` followed by the offending line and a caret.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Position:
    """A place in a rules file: 1-based line and column, plus the text of that line."""

    file: str
    line: int
    col: int
    line_text: str = ""

    def prefix(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class RulesError(Exception):
    """Base of every error the rules package reports to a user."""

    def __init__(self, message: str, position: Position | None = None, *, hint: str = "") -> None:
        self.message = message
        self.position = position
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        """`file:line:col: message`, the offending line and a caret under the column."""
        text = self.message + (f" ({self.hint})" if self.hint else "")
        pos = self.position
        if pos is None:
            return text
        out = f"{pos.prefix()}: {text}"
        if pos.line_text:
            line, col = snippet(pos.line_text.rstrip("\n").expandtabs(1), pos.col - 1)
            out += f"\n    {line}\n    {' ' * max(col, 0)}^"
        return out


SNIPPET_WIDTH = 100


def snippet(line: str, col0: int, width: int = SNIPPET_WIDTH) -> tuple[str, int]:
    """At most ``width`` characters of ``line`` around 0-based ``col0`` (with ``...`` where
    cut), and the column of ``col0`` in it: a 20,000-term condition is not echoed whole;
    control characters are shown as ``?``."""
    line = "".join(ch if ch.isprintable() else "?" for ch in line)  # no terminal controls
    if len(line) <= width:
        return line, col0
    start = max(0, min(col0 - width // 2, len(line) - width))
    cut = line[start:start + width]
    lead = "..." if start > 0 else ""
    tail = "..." if start + width < len(line) else ""
    return lead + cut + tail, col0 - start + len(lead)


class RuleLoadError(RulesError):
    """A rules file cannot be loaded (YAML, structure, or anything below)."""


class RuleSyntaxError(RuleLoadError):
    """A condition, output or YAML document is malformed."""


class RuleTypeError(RuleLoadError):
    """A comparison does not fit the field's type (e.g. a number field against text)."""


class UnknownNameError(RuleLoadError):
    """A field, macro or list name that is not defined anywhere."""


class UnsupportedError(RuleLoadError):
    """A valid Falco construct that netvigil does not support (field, event type, operator).

    ``rule`` names the rule it was found in (set by the loader), ``feature`` what is missing.
    """

    def __init__(self, message: str, position: Position | None = None, *, feature: str = "",
                 rule: str = "", hint: str = "") -> None:
        self.feature = feature
        self.rule = rule
        super().__init__(message, position, hint=hint)


class EnforceConfigError(RuleLoadError):
    """An ``enforce:`` block with an unknown key or a bad value."""


class RuleLoadErrors(RuleLoadError):
    """Several load errors at once (``rules check`` reports them all)."""

    def __init__(self, errors: list[RuleLoadError]) -> None:
        self.errors = list(errors)
        super().__init__(f"{len(self.errors)} errors")

    def render(self) -> str:
        """Every error, each with its position and caret, then the count."""
        errors = getattr(self, "errors", [])
        return "\n".join(e.render() for e in errors) + f"\n{len(errors)} errors"


class EventsFileError(RulesError):
    """An events or expected-alerts file for ``rules test`` is unreadable or malformed."""
