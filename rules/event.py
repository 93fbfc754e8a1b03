"""The event mapping: the fields the sensor stored, derived fields computed when read.

`Event` is a dict of the stored fields (what is recorded, hashed and copied); reading a
derived field (``ev["fd.sport"]``, ``ev.get("fd.name")``) computes it from the stored ones
with the derivation of `rules.fields`. The rule engine reads stored fields through
``Event.stored_get`` (dict's own lookup) and derived ones through compiled readers, so
it works the same on a plain mapping that stores every field itself.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rules.fields import DERIVATIONS

_dict_get = dict.get
_ABSENT = object()


class Event(dict):
    """One event: stored fields as dict items; derived fields answered on lookup."""

    __slots__ = ()
    stored_get = dict.get
    """The stored fields only (a derived field reads as absent)."""

    def __missing__(self, key: str) -> Any:
        derive = DERIVATIONS.get(key)
        if derive is not None:
            value = derive(self.stored_get)
            if value is not None:
                return value
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        value = _dict_get(self, key, _ABSENT)
        if value is _ABSENT:
            derive = DERIVATIONS.get(key)
            value = None if derive is None else derive(self.stored_get)
            return default if value is None else value
        return value

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        derive = DERIVATIONS.get(key) if isinstance(key, str) else None
        return derive is not None and derive(self.stored_get) is not None

    def copy(self) -> Event:
        return Event(self)


def expanded(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as a plain dict with its derived fields added (what JSON readers see)."""
    out = dict(event)
    get = out.get
    for name, derive in DERIVATIONS.items():
        if get(name) is None:
            value = derive(get)
            if value is not None:
                out[name] = value
    return out
