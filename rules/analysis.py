"""Static facts about checked conditions, used by the engine's indexes."""
from __future__ import annotations

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


def equality_fields(node: CNode) -> set[str]:
    """Plain fields compared with =/in somewhere in ``node`` (index candidates)."""
    out: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (CAnd, COr)):
            stack.extend(n.items)
        elif isinstance(n, CNot):
            continue
        elif isinstance(n, CCmp) and n.access == "direct" and n.arg is None and \
                n.sources == (n.field,) and n.op in ("=", "in") and \
                n.scalar_type in ("str", "int", "port"):
            out.add(n.field)
    return out


def cost(node: CNode) -> int:
    """A rough evaluation cost (number of comparisons)."""
    if isinstance(node, (CAnd, COr)):
        return sum(cost(n) for n in node.items)
    if isinstance(node, CNot):
        return cost(node.item)
    return 1
