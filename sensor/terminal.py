"""The one console factory: what a person reads goes through rich, what a pipe reads stays plain.

`--color auto|always|never` (a global option) and the NO_COLOR convention decide colour;
terminal detection decides whether views are drawn at all (callers write JSON lines to a
pipe, unchanged, and never ask for a console there).
"""
from __future__ import annotations

import argparse
import io
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

COLOR_CHOICES = ("auto", "always", "never")
#: Width of plain renderings (pipes, logs, tests): wide enough that nothing wraps.
PLAIN_WIDTH = 240


def add_color_option(parser: argparse.ArgumentParser) -> None:
    """Add the global `--color` option to the top-level parser."""
    parser.add_argument("--color", choices=COLOR_CHOICES, default="auto",
                        help="colour on terminals: auto (default; off when NO_COLOR is set "
                             "or output is not a terminal), always, never")


def is_terminal(stream: Any) -> bool:
    """True when `stream` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def color_wanted(stream: Any, color: str = "auto") -> bool:
    """Whether to colour `stream`: `always`, `never`, or (auto) a terminal without NO_COLOR."""
    if color == "always":
        return True
    if color == "never" or os.environ.get("NO_COLOR"):
        return False
    return is_terminal(stream)


def color_of(args: argparse.Namespace | None) -> str:
    """The `--color` choice on parsed arguments (auto when absent)."""
    return getattr(args, "color", None) or "auto"


def console(stream: TextIO | None = None, color: str = "auto", *,
            width: int | None = None) -> Console:
    """A rich console writing to `stream` (stdout by default).

    On a terminal it takes the terminal's width; elsewhere it renders at PLAIN_WIDTH so a
    table is never wrapped, and without any escape code unless colour is forced."""
    stream = stream if stream is not None else sys.stdout
    tty = is_terminal(stream)
    colour = color_wanted(stream, color)
    return Console(file=stream, force_terminal=colour or None if tty else colour,
                   no_color=not colour, color_system="auto" if colour else None,
                   width=width if width is not None else (None if tty else PLAIN_WIDTH),
                   highlight=False, emoji=False, soft_wrap=False,
                   force_interactive=None if tty else False)


def plain_text(renderable: Any, width: int = PLAIN_WIDTH) -> str:
    """`renderable` as plain text (no escape codes), trailing spaces stripped per line."""
    buf = io.StringIO()
    console(buf, "never", width=width).print(renderable)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(value: Any) -> str:
    """`value` as text that is safe to show: control characters (a command line's newlines,
    escape codes a process put in its name) are shown as `\\n`, `\\x1b`, never sent to the
    terminal, where they would break the layout or drive the terminal."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), str(value))


def cell(value: Any, style: str = "") -> Text:
    """A table cell showing `value` literally: never read as rich markup (a `[/x]` in an
    observed command line is text, not a tag), control characters shown escaped."""
    return Text(printable(value), style=style)


def fit_columns(columns: Sequence[tuple[str, int | None, str]], width: int, *,
                min_rest: int = 30) -> tuple[tuple[str, int, str], ...]:
    """`columns` with widths that fill `width` exactly, so rich never shrinks them row by row:
    the column of width None takes what the others leave; when that is under `min_rest`
    (a narrow terminal), the fixed left-aligned columns after the first give up space in
    proportion, never below their title's width (numbers, right-aligned, are never cut)."""
    cols = list(columns)
    pad = 2 * (len(cols) - 1)   # one space each side between columns, none at the edges
    rest = width - pad - sum(w or 0 for _, w, _ in cols)
    if rest < min_rest:
        give = {i: w - len(t) for i, (t, w, j) in enumerate(cols)
                if w and i > 0 and j == "left" and w > len(t)}
        room = sum(give.values())
        take = min(min_rest - rest, room)
        for i, spare in give.items():
            t, w, j = cols[i]
            cut = -(-take * spare // room)   # rounded up: the rest gets at least min_rest
            cols[i] = (t, max(len(t), (w or 0) - cut), j)
        rest = width - pad - sum(w or 0 for _, w, _ in cols)
    return tuple((t, w if w is not None else max(rest, 1), j) for t, w, j in cols)


def column_table(columns: Sequence[tuple[str, int | None, str]], *, header: bool = True,
                 **kwargs: Any) -> Table:
    """An empty borderless table of (title, width or None, justify) columns."""
    table = Table(box=None, pad_edge=False, show_header=header, header_style="bold", **kwargs)
    for title, width, justify in columns:
        table.add_column(title, width=width, min_width=width, justify=justify, no_wrap=True,  # type: ignore[arg-type]
                         overflow="ellipsis")
    return table


class StreamTable:
    """A table printed row by row as rows arrive (events, connections): fixed column widths,
    the header once, cells cut with an ellipsis; the last column of width None takes the rest."""

    def __init__(self, out: Console, columns: Sequence[tuple[str, int | None, str]]) -> None:
        self.out = out
        self.columns = fit_columns(columns, out.width)
        self._header_done = False

    def row(self, *cells: Any, style: str | None = None) -> None:
        """Print one row (with the header before the first); plain strings are shown literally."""
        table = column_table(self.columns, header=not self._header_done)
        self._header_done = True
        table.add_row(*(cell(c) if isinstance(c, str) else c for c in cells), style=style)
        self.out.print(table)
