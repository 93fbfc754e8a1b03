"""Read a rules YAML file into items that remember where each key sits (file:line:col)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rules.errors import Position, RuleLoadError, RuleSyntaxError
from rules.source import Segment, SourceFile, SourceText
from rules.userfile import BoundedLoader, InputFileError, compose, construct, read_text

ITEM_KINDS = ("rule", "macro", "list", "required_engine_version", "required_plugin_versions")


@dataclass
class Item:
    """One top-level item (rule, macro, list, ...) with its keys' values and YAML nodes."""

    kind: str
    name: Any
    data: dict[str, Any]
    nodes: dict[str, yaml.Node]
    node: yaml.Node
    file: SourceFile
    key_nodes: dict[str, yaml.Node] = field(default_factory=dict)

    def pos(self, key: str | None = None, *, at_key: bool = False) -> Position:
        """Position of ``key``'s value (or of the key itself), else of the item."""
        node = None
        if key is not None:
            node = (self.key_nodes if at_key else self.nodes).get(key)
        node = node or self.node
        return self.file.position(node.start_mark.line, node.start_mark.column)

    def text(self, key: str) -> SourceText:
        """The scalar text of ``key`` as a SourceText (positions map back to the file)."""
        node = self.nodes[key]
        value = self.data[key]
        if not isinstance(value, str):
            value = "" if value is None else str(value)
        style = getattr(node, "style", None)
        return SourceText([Segment(value, self.file, node.start_mark.index, style)])

    def node_pos(self, node: yaml.Node) -> Position:
        return self.file.position(node.start_mark.line, node.start_mark.column)


def read_items(path: Path, display: str | None = None) -> list[Item]:
    """Parse one rules file; raises RuleLoadError with file:line:col on any problem."""
    try:
        return _items(read_text(path, display or str(path)))
    except InputFileError as exc:
        error = RuleSyntaxError if exc.position is not None else RuleLoadError
        raise error(exc.message, exc.position) from None


def parse_items(text: str, name: str) -> list[Item]:
    """Parse rules YAML text (``name`` is used in messages)."""
    try:
        return _items(SourceFile(name, text))
    except InputFileError as exc:
        raise RuleSyntaxError(exc.message, exc.position) from None


def _items(src: SourceFile) -> list[Item]:
    loader, root = compose(src)
    try:
        if root is None:
            return []
        if not isinstance(root, yaml.SequenceNode):
            raise RuleSyntaxError("a rules file is a YAML list of rule, macro and list items",
                                  src.position(root.start_mark.line, root.start_mark.column))
        return [_item(loader, node, src) for node in root.value]
    finally:
        loader.dispose()


def _item(loader: BoundedLoader, node: yaml.Node, src: SourceFile) -> Item:
    pos = src.position(node.start_mark.line, node.start_mark.column)
    if not isinstance(node, yaml.MappingNode):
        raise RuleSyntaxError("each item must be a mapping with a rule, macro or list key", pos)
    data: dict[str, Any] = {}
    nodes: dict[str, yaml.Node] = {}
    key_nodes: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = construct(loader, key_node)
        if not isinstance(key, str):
            raise RuleSyntaxError(f"item keys must be text, not {key!r}",
                                  src.position(key_node.start_mark.line,
                                               key_node.start_mark.column))
        if key in data:
            raise RuleSyntaxError(f"duplicate key {key!r}",
                                  src.position(key_node.start_mark.line,
                                               key_node.start_mark.column))
        data[key] = construct(loader, value_node)
        nodes[key] = value_node
        key_nodes[key] = key_node
    kinds = [k for k in ITEM_KINDS if k in data]
    if not kinds:
        from rules.checker import did_you_mean
        keys = ", ".join(sorted(data)) or "none"
        hint = ""
        for k in data:
            hint = did_you_mean(k, ("rule", "macro", "list"))
            if hint:
                break
        raise RuleSyntaxError(f"item has no rule, macro or list key (keys: {keys})", pos,
                              hint=hint)
    kind = kinds[0]
    return Item(kind, data[kind], data, nodes, node, src, key_nodes)
