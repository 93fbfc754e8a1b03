"""Reading a file a user hands to netvigil (rules, configs): bytes, text, YAML, bounded.

One reader for every such file. Every failure is an :class:`InputFileError` naming the
file and, where there is one, line:col and the offending line:

* OS errors (missing, permission, a directory), and non-UTF-8 bytes (the byte offset is
  turned into line:col);
* YAML errors, with their mark, or (control characters, which PyYAML reports by
  character offset only) the offset turned into line:col;
* nesting deeper than :data:`MAX_DEPTH` levels, found while the document is composed,
  before Python's recursion limit is anywhere near;
* alias expansion: every node's expanded size (aliases counted as the size of what they
  point to) is known once it is composed, so a "billion laughs" document is refused
  after reading its few lines, before any value is built (:data:`MAX_NODES`);
* duplicate mapping keys, with the line of the first occurrence.

Mappings built by :func:`load_yaml` are :class:`LocatedDict` (a dict that also knows the
line:col of each key), so validators can name the line of a bad key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rules.errors import Position, RulesError

MAX_DEPTH = 100
"""Deepest nesting of collections a file may have (rules nest 4 deep, configs 6)."""
MAX_NODES = 1_000_000
"""Most YAML nodes a document may expand to (aliases counted at their expanded size)."""


class InputFileError(RulesError):
    """A user file cannot be read or is not well-formed YAML (names file and line:col)."""


class LocatedDict(dict):
    """A mapping from a user file that remembers where each key was written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_positions: dict[Any, Position] = {}
        self.position: Position | None = None

    def where(self, key: Any) -> Position | None:
        """Position of ``key`` in its file (None if unknown)."""
        return self.key_positions.get(key)


def key_position(mapping: Any, key: Any) -> Position | None:
    """Where ``key`` of ``mapping`` was written, when ``mapping`` came from a user file."""
    return mapping.where(key) if isinstance(mapping, LocatedDict) else None


def at_line(mapping: Any, key: Any) -> str:
    """`` (line N)`` for messages about ``key``, or '' when its line is unknown."""
    pos = key_position(mapping, key)
    return f" (line {pos.line})" if pos is not None else ""


class TextFile:
    """A file's name and text, mapping offsets and 0-based line/column to Positions."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.lines = text.splitlines()
        self._starts: list[int] | None = None

    def position(self, line0: int, col0: int) -> Position:
        """Position from 0-based line/column (as YAML marks give them)."""
        text = self.lines[line0] if 0 <= line0 < len(self.lines) else ""
        return Position(self.name, line0 + 1, col0 + 1, text)

    def position_at(self, index: int) -> Position:
        """Position of a character index into the text (O(log n) after one scan)."""
        import bisect  # noqa: PLC0415

        if self._starts is None:
            starts, i = [0], self.text.find("\n")
            while i >= 0:
                starts.append(i + 1)
                i = self.text.find("\n", i + 1)
            self._starts = starts
        index = max(0, min(index, len(self.text)))
        line0 = bisect.bisect_right(self._starts, index) - 1
        return self.position(line0, index - self._starts[line0])

    def mark_position(self, mark: Any) -> Position:
        """Position of a PyYAML mark."""
        return self.position(mark.line, mark.column)


def read_text(path: Path | str, display: str | None = None) -> TextFile:
    """The UTF-8 text of a user file; OS and decoding errors as InputFileError."""
    name = display or str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputFileError(f"{name}: cannot read: {exc.strerror or exc}") from None
    return decode_text(raw, name)


def decode_text(raw: bytes, name: str) -> TextFile:
    """``raw`` as UTF-8 text; a bad byte is reported at its line:col."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start
        line0 = raw.count(b"\n", 0, start)
        col0 = start - (raw.rfind(b"\n", 0, start) + 1)
        line = raw.split(b"\n")[line0].decode("utf-8", "replace") if line0 < raw.count(b"\n") + 1 \
            else ""
        raise InputFileError(f"not UTF-8 text (byte 0x{raw[start]:02x} at offset {start})",
                             Position(name, line0 + 1, col0 + 1, line)) from None
    return TextFile(name, text)


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader with a depth limit, an alias-expansion limit and no duplicate keys.

    A bare ``=`` is text (Falco writes ``comps: [=, in]``); mappings are LocatedDicts.
    """

    def __init__(self, stream: str, file: TextFile) -> None:
        super().__init__(stream)
        self.file = file
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise InputFileError(f"nested more than {MAX_DEPTH} levels deep",
                                     self.file.mark_position(mark))
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        sizes = self._sizes
        if id(node) not in sizes:
            if isinstance(node, yaml.ScalarNode):
                size = 1
            elif isinstance(node, yaml.SequenceNode):
                size = 1 + sum(sizes.get(id(n), 1) for n in node.value)
            else:
                size = 1 + sum(sizes.get(id(k), 1) + sizes.get(id(v), 1) for k, v in node.value)
            if size > MAX_NODES:
                raise InputFileError(f"YAML aliases expand to more than {MAX_NODES} values "
                                     "(an alias bomb?)", self.file.mark_position(node.start_mark))
            sizes[id(node)] = size
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep)
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable: the base class reports it
            if first is not None:
                raise InputFileError(
                    f"duplicate key {key!r} (first at line {first.line + 1})",
                    self.file.mark_position(key_node.start_mark))
            seen[key] = key_node.start_mark
        plain = super().construct_mapping(node, deep)
        out = LocatedDict(plain)
        out.position = self.file.mark_position(node.start_mark)
        for key, mark in seen.items():
            out.key_positions[key] = self.file.mark_position(mark)
        return out


BoundedLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
BoundedLoader.add_constructor(
    "tag:yaml.org,2002:map",
    lambda loader, node: loader.construct_mapping(node, deep=True))


def yaml_error(exc: yaml.YAMLError, file: TextFile) -> InputFileError:
    """A PyYAML error as InputFileError at its mark (or its character offset)."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        code = ord(char) if isinstance(char, str) else char
        return InputFileError(f"control character U+{code:04X} is not allowed in YAML "
                              "(write it escaped in a double-quoted string)",
                              file.position_at(exc.position))
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    return InputFileError(message, file.mark_position(mark) if mark is not None else None)


def compose(file: TextFile) -> tuple[BoundedLoader, yaml.Node | None]:
    """The YAML node tree of ``file`` and the loader to construct values with.

    The caller must ``loader.dispose()`` after constructing. Errors: InputFileError.
    """
    try:
        loader = BoundedLoader(file.text, file)
    except yaml.YAMLError as exc:  # the reader checks every character first
        raise yaml_error(exc, file) from None
    try:
        return loader, loader.get_single_node()
    except yaml.YAMLError as exc:
        loader.dispose()
        raise yaml_error(exc, file) from None
    except RecursionError:
        loader.dispose()
        raise InputFileError(f"{file.name}: nested too deeply") from None
    except InputFileError:
        loader.dispose()
        raise


def construct(loader: BoundedLoader, node: yaml.Node) -> Any:
    """The value of ``node`` (LocatedDicts for mappings); errors as InputFileError."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, loader.file) from None
    except RecursionError:
        raise InputFileError(f"{loader.file.name}: nested too deeply") from None


def load_yaml(path: Path | str, display: str | None = None) -> tuple[Any, TextFile]:
    """The value of a user YAML file (None when empty) and its text."""
    file = read_text(path, display)
    return load_yaml_text(file), file


def load_yaml_text(file: TextFile) -> Any:
    """The value of YAML text (None when empty); errors as InputFileError."""
    loader, node = compose(file)
    try:
        return None if node is None else construct(loader, node)
    finally:
        loader.dispose()
