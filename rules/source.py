"""Where condition text came from: map an offset in a condition back to file:line:col.

A condition is a YAML scalar (plain, quoted, or a folded/literal block), or several of
them joined (``append``/``override``). YAML changes only whitespace (and quoted escapes),
so an offset is mapped by counting non-blank characters from the scalar's start in the
file.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from rules.errors import Position
from rules.userfile import TextFile


SourceFile = TextFile
"""A loaded rules file: its display name and text (the one user-file text type)."""


@dataclass
class Segment:
    """A piece of condition text and where its first character sits in a file."""

    text: str
    file: SourceFile | None
    start_index: int  # index in file.text where the scalar's content begins
    style: str | None = None  # YAML scalar style: None (plain), "'", '"', ">", "|"

    _blanks: list[int] | None = field(default=None, repr=False)
    _file_chars: list[int] | None = field(default=None, repr=False)

    def locate(self, offset: int) -> Position | None:
        """Position of ``self.text[offset]`` in the file, or None without a file.

        The n-th non-blank character of the text is the n-th non-blank character of the
        scalar in the file; both sequences are indexed once, so each lookup is
        O(log n) (a condition with thousands of terms is checked in linear time).
        An offset at or past the end points just after the last character of the text,
        never at whatever follows the scalar in the file.
        """
        if self.file is None:
            return None
        if self._blanks is None:
            self._index()
        offset = max(0, min(offset, len(self.text)))
        need = offset - bisect.bisect_left(self._blanks, offset)  # non-blanks before it
        chars = self._file_chars
        if not chars:
            return self.file.position_at(self._content_start())
        if need < len(chars):
            return self.file.position_at(chars[need])
        return self.file.position_at(chars[-1] + 1)

    def _content_start(self) -> int:
        src, i = self.file.text, self.start_index
        if self.style in (">", "|"):
            nl = src.find("\n", i)
            i = len(src) if nl < 0 else nl + 1
        elif self.style in ("'", '"'):
            i += 1
        return i

    def _index(self) -> None:
        self._blanks = [i for i, ch in enumerate(self.text) if ch.isspace()]
        wanted = len(self.text) - len(self._blanks)
        src, i = self.file.text, self._content_start()
        chars: list[int] = []
        n = len(src)
        while i < n and len(chars) < wanted:
            if not src[i].isspace():
                chars.append(i)
            i += 1
        self._file_chars = chars


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
