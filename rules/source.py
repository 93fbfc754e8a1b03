"""Where condition text came from: map an offset in a condition back to file:line:col.

A condition is a YAML scalar (plain, quoted, or a folded/literal block), or several of
them joined (``append``/``override``). YAML changes only whitespace (and quoted escapes),
so an offset is mapped by counting non-blank characters from the scalar's start in the
file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rules.errors import Position


@dataclass
class SourceFile:
    """A loaded rules file: its display name and text."""

    name: str
    text: str
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.lines:
            self.lines = self.text.splitlines()

    def position(self, line0: int, col0: int) -> Position:
        """Position from 0-based line/column (as YAML marks give them)."""
        text = self.lines[line0] if 0 <= line0 < len(self.lines) else ""
        return Position(self.name, line0 + 1, col0 + 1, text)

    def position_at(self, index: int) -> Position:
        """Position of a character index into the file text."""
        index = max(0, min(index, len(self.text)))
        line0 = self.text.count("\n", 0, index)
        start = self.text.rfind("\n", 0, index) + 1
        return self.position(line0, index - start)


@dataclass
class Segment:
    """A piece of condition text and where its first character sits in a file."""

    text: str
    file: SourceFile | None
    start_index: int  # index in file.text where the scalar's content begins
    style: str | None = None  # YAML scalar style: None (plain), "'", '"', ">", "|"

    def locate(self, offset: int) -> Position | None:
        """Position of ``self.text[offset]`` in the file, or None without a file."""
        if self.file is None:
            return None
        src = self.file.text
        i = self.start_index
        if self.style in (">", "|"):
            nl = src.find("\n", i)
            i = len(src) if nl < 0 else nl + 1
        elif self.style in ("'", '"'):
            i += 1
        offset = max(0, min(offset, len(self.text)))
        # Count the non-blank characters before `offset`, then skip as many in the file.
        need = sum(1 for ch in self.text[:offset] if not ch.isspace())
        while i < len(src):
            ch = src[i]
            if not ch.isspace():
                if need == 0:
                    break
                need -= 1
            i += 1
        return self.file.position_at(i)


class SourceText:
    """Condition text made of one or more segments joined by single spaces."""

    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments
        self.text = " ".join(s.text for s in segments)

    @classmethod
    def plain(cls, text: str) -> "SourceText":
        """Text that comes from nowhere in particular (CLI --where, tests)."""
        return cls([Segment(text, SourceFile("<condition>", text), 0)])

    def position(self, offset: int) -> Position | None:
        """Position of the character at ``offset`` of the joined text."""
        base = 0
        for seg in self.segments:
            end = base + len(seg.text)
            if offset <= end or seg is self.segments[-1]:
                return seg.locate(offset - base)
            base = end + 1
        return None

    def appended(self, other: "SourceText") -> "SourceText":
        """This text followed by ``other`` (Falco appends with a space)."""
        return SourceText(self.segments + other.segments)
