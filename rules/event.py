"""The event mapping: the fields the sensor stored, derived fields computed when read.

An `Event` stores what the sensor decoded, each fact once (a connection's ends as
fd.lip/fd.lport and fd.rip/fd.rport). As a mapping it also has the derived fields of
`rules.fields` (fd.cip, fd.sport, fd.name...), computed from the stored ones when read:
``ev["fd.sport"]``, ``ev.get("fd.name")``, ``"fd.sip" in ev``, and iteration, ``dict(ev)``,
``==`` and JSON see the whole event. What is stored is the dict underneath: `stored()`,
``dict.keys(ev)`` and ``Event.stored_get`` (the recorder and the rule engine use these;
both work the same on a plain dict that stores every field itself).
"""
from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any

from rules.fields import DERIVATIONS

_dict_get = dict.get
_dict_items = dict.items
_ABSENT = object()


def stored(event: Mapping[str, Any]) -> dict[str, Any]:
    """What an event stores, as a plain dict (an Event's derived fields left out)."""
    if isinstance(event, Event):
        return dict(_dict_items(event))  # not dict(event): that walks the whole event
    return dict(event)


def expanded(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as a plain dict: its stored fields, then the derived ones it has."""
    out = stored(event)
    get = out.get
    for name, derive in DERIVATIONS.items():
        if get(name) is None:
            value = derive(get)
            if value is not None:
                out[name] = value
    return out


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

    # the whole event (stored and derived fields) for everything that walks it
    def __iter__(self) -> Iterator[str]:
        return iter(expanded(self))

    def __len__(self) -> int:
        return len(expanded(self))

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        return expanded(self).keys()

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        return expanded(self).items()

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        return expanded(self).values()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return expanded(self) == (expanded(other) if isinstance(other, Event) else other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> Event:
        """A new Event with the same stored fields."""
        return Event(_dict_items(self))

    def __repr__(self) -> str:
        return f"Event({expanded(self)!r})"
