"""Typed errors of the rules package.

Every error a user can cause carries a :class:`Position` when one is known, and its
``str()`` is ``file:line:col: message`` followed by the offending line and a caret
(``^~~~`` under the offending token); :meth:`RulesError.styled` is the same text in
colour, for a terminal.
"""
from __future__ import annotations

from dataclasses import dataclass

from rich.text import Span, Text


#: Most characters of an offending line shown.
SNIPPET_WIDTH = 100
STYLE_LOCATION = "bold"
STYLE_MESSAGE = "red"
STYLE_SPAN = "bold red"


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
        return self.styled().plain

    def styled(self, width: int = SNIPPET_WIDTH) -> Text:
        """:meth:`render` as rich text: the location in bold, the message in red, the
        offending token in the line shown (at most ``width`` characters of it) in bold red,
        underlined by ``^~~~``."""
        message = self.message + (f" ({self.hint})" if self.hint else "")
        pos = self.position
        if pos is None:
            return Text(message, style=STYLE_MESSAGE)
        out = Text.assemble((f"{pos.prefix()}:", STYLE_LOCATION), " ", (message, STYLE_MESSAGE))
        if pos.line_text:
            from rules.lexer import token_length  # noqa: PLC0415 (the lexer imports this module)

            full = printable(pos.line_text.rstrip("\n").expandtabs(1))
            col0 = max(pos.col - 1, 0)
            span = token_length(full, col0) if col0 < len(full) else 1
            line, col = snippet(full, col0, width)
            span = max(1, min(span, len(line) - col))
            out.append("\n    ")
            out.append_text(Text(line, spans=[Span(col, col + span, STYLE_SPAN)]))
            out.append("\n    " + " " * col)
            out.append("^" + "~" * (span - 1), style=STYLE_SPAN)
        return out


def printable(line: str) -> str:
    """``line`` with control characters shown as ``?`` (no terminal controls echoed)."""
    return "".join(ch if ch.isprintable() else "?" for ch in line)


def snippet(line: str, col0: int, width: int = SNIPPET_WIDTH) -> tuple[str, int]:
    """At most ``width`` characters of ``line`` around 0-based ``col0`` (with ``...`` where
    cut), and the column of ``col0`` in it: a 20,000-term condition is not echoed whole;
    control characters are shown as ``?``."""
    line = printable(line)
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

    def styled(self, width: int = SNIPPET_WIDTH) -> Text:
        """Every error, each with its position and caret, then the count."""
        errors = getattr(self, "errors", [])
        return Text("\n").join([*(e.styled(width) for e in errors),
                                Text(f"{len(errors)} errors", style=STYLE_LOCATION)])


class EventsFileError(RulesError):
    """An events or expected-alerts file for ``rules test`` is unreadable or malformed."""
