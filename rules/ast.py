"""Condition syntax tree. Every node keeps the offset of its first token in its source."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Value:
    """A literal operand: bare word or quoted string (quoted values are never list names)."""

    text: str
    quoted: bool
    offset: int


@dataclass(frozen=True)
class ListValue:
    """A parenthesised list ``(a, "b", some_list)``; names of lists are expanded later."""

    items: tuple[Value, ...]
    offset: int
    bare: bool = False  # `in list_name` without parentheses


@dataclass(frozen=True)
class Compare:
    """``field[arg] op operand``; operand is None for unary ``exists``."""

    field: str
    arg: str | None
    op: str
    operand: Value | ListValue | None
    offset: int
    op_offset: int


@dataclass(frozen=True)
class MacroRef:
    """A bare identifier: a macro reference."""

    name: str
    offset: int


@dataclass(frozen=True)
class Not:
    item: "Node"
    offset: int


@dataclass(frozen=True)
class And:
    items: tuple["Node", ...]
    offset: int


@dataclass(frozen=True)
class Or:
    items: tuple["Node", ...]
    offset: int


@dataclass(frozen=True)
class Const:
    """A constant truth value (an empty exception list, a resolved always-false test)."""

    value: bool
    offset: int = 0


Node = Compare | MacroRef | Not | And | Or | Const
