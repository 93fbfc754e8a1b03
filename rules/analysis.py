"""Static facts about checked conditions, used by the engine's indexes."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rules.checker import CAnd, CCmp, CConst, CNode, CNot, COr


def required_values(node: CNode, field: str) -> frozenset | None:
    """Values ``field`` must equal for ``node`` to hold, or None if unconstrained.

    ``evt.type = connect and ...`` -> {"connect"}; an ``or`` unions its branches, an
    ``and`` intersects them, ``not`` and other operators constrain nothing.
    """
    if isinstance(node, CCmp):
        if node.field == field and node.access == "direct" and node.arg is None and \
                node.sources == (field,) and node.op in ("=", "in", "intersects") and \
                node.scalar_type in ("str", "int", "port", "bool"):
            return node.const if isinstance(node.const, frozenset) else frozenset([node.const])
        return None
    if isinstance(node, CConst):
        return None if node.value else frozenset()
    if isinstance(node, CAnd):
        result: frozenset | None = None
        for item in node.items:
            sub = required_values(item, field)
            if sub is not None:
                result = sub if result is None else result & sub
        return result
    if isinstance(node, COr):
        acc: set[Any] = set()
        for item in node.items:
            sub = required_values(item, field)
            if sub is None:
                return None
            acc |= sub
        return frozenset(acc)
    return None


def _comparisons(node: CNode, *, under_not: bool) -> Iterator[CCmp]:
    """The comparisons in ``node`` (also those under a ``not`` when ``under_not``)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (CAnd, COr)):
            stack.extend(n.items)
        elif isinstance(n, CNot):
            if under_not:
                stack.append(n.item)
        elif isinstance(n, CCmp):
            yield n


def equality_fields(node: CNode) -> set[str]:
    """Plain fields compared with =/in somewhere in ``node`` (index candidates)."""
    return {n.field for n in _comparisons(node, under_not=False)
            if n.access == "direct" and n.arg is None and n.sources == (n.field,)
            and n.op in ("=", "in") and n.scalar_type in ("str", "int", "port")}


def cost(node: CNode) -> int:
    """A rough evaluation cost (number of comparisons)."""
    if isinstance(node, (CAnd, COr)):
        return sum(cost(n) for n in node.items)
    if isinstance(node, CNot):
        return cost(node.item)
    return 1


NUMERIC_OPS = frozenset({"=", "!=", "<", "<=", ">", ">=", "in", "intersects", "exists"})


def field_uses(node: CNode) -> dict[str, frozenset | None]:
    """The event fields ``node`` reads, and how their values can affect its result.

    A field maps to a frozenset of ints when every use of it is a numeric comparison
    (``= != < <= > >= in exists``) with those constants: then only the position of an
    int value among the constants matters (``evt.num = 0`` cannot tell 5 from 6). It
    maps to None when its exact value may matter. Used to memoize rule results.
    """
    out: dict[str, frozenset | None] = {}
    for n in _comparisons(node, under_not=True):
        numeric = _numeric_consts(n)
        names = n.sources if n.access in ("direct", "either") else n.sources[:1]
        for name in names:
            if numeric is None:
                out[name] = None
            elif name not in out:
                out[name] = numeric
            elif out[name] is not None:
                out[name] = out[name] | numeric
    return out


def _numeric_consts(n: CCmp) -> frozenset | None:
    """Constants of a numeric comparison on plain values, or None if not one."""
    if n.access not in ("direct", "either") or n.scalar_type not in ("int", "port") \
            or n.op not in NUMERIC_OPS:
        return None
    if n.op == "exists":
        return frozenset()
    values = n.const if isinstance(n.const, frozenset) else (n.const,)
    if not all(type(v) is int for v in values):
        return None
    return frozenset(values)


def specialize(node: CNode, field: str, value: Any) -> CNode:
    """``node`` for events whose plain ``field`` is known to equal ``value`` (a hashable,
    non-None value such as the evt.type an index dispatched on).

    Comparisons of that field fold to constants; ``and``/``or`` drop what can no longer
    change their result. An error raised by a remaining item still makes the rule false,
    so a folded constant that decides an ``and``/``or`` keeps the items before it (one of
    them might raise, even under a ``not``).
    """
    if isinstance(node, CCmp):
        if node.field != field or node.access != "direct" or node.arg is not None \
                or node.sources != (field,):
            return node
        if node.op == "=":
            return CConst(bool(value == node.const))
        if node.op in ("in", "intersects") and isinstance(node.const, frozenset):
            return CConst(value in node.const)
        if node.op == "!=":
            return CConst(bool(value != node.const))
        if node.op == "exists":
            return CConst(True)
        return node
    if isinstance(node, CNot):
        item = specialize(node.item, field, value)
        return CConst(not item.value) if isinstance(item, CConst) else CNot(item)
    if isinstance(node, (CAnd, COr)):
        is_and = isinstance(node, CAnd)
        items: list[CNode] = []
        for item in node.items:
            sub = specialize(item, field, value)
            if isinstance(sub, CConst):
                if sub.value == is_and:  # True in an and, False in an or: no effect
                    continue
                if not items:  # decides the result before anything could raise
                    return CConst(not is_and)
                items.append(sub)  # decides it after items that may raise: keep them
                break
            items.append(sub)
        if not items:
            return CConst(is_and)
        if len(items) == 1:
            return items[0]
        return CAnd(tuple(items)) if is_and else COr(tuple(items))
    return node
