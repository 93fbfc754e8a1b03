"""The engine's shared matchers (index, hoisted reads, memoized sub-conditions) fire exactly
the rules each rule's own predicate accepts, for dicts, Events and any other mapping,
ordinary and malformed field values alike."""
from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from rules import DEFAULT_RULES_DIR
from rules.event import Event
from rules.loader import load_rules
from sensor.recording.synthetic import SyntheticNode
from test_rules_default import CASES

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "falco-rules"
# values a field may hold in a hand-written or damaged event: the rules must not care how
# the engine shares work when a comparison on them fails or raises
ODD = [None, [], ["x"], {}, {"app": "x"}, 1.5, -1, 0, "", "127.0.0.1", "::1", True, b"x"]


def _events() -> Iterator[dict[str, Any]]:
    for attack, near_miss in CASES.values():
        yield attack
        yield near_miss
    for kind, item in SyntheticNode(seed=3, suspicious_every=40).stream(1500):
        if kind == "event":
            yield dict(item)  # with its derived fields, as a hand-made event has them
            yield dict(dict.items(item))  # stored fields only, as the sensor builds it


def _perturbed(events: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    rnd = random.Random(14)
    for ev in events:
        yield ev
        for _ in range(3):
            odd = dict(ev)
            for name in rnd.sample(sorted(ev), k=min(3, len(ev))):
                if name != "evt.type":
                    odd[name] = rnd.choice(ODD)
            yield odd


class Plain(Mapping):
    """A mapping that is neither a dict nor an Event."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _rulesets() -> list[Any]:
    sets = [load_rules([DEFAULT_RULES_DIR])]
    if CORPUS.is_dir():
        sets.append(load_rules(sorted(CORPUS.glob("*.yaml")), skip_unsupported=True))
    return sets


RULESETS = _rulesets()


@pytest.mark.parametrize("ruleset", RULESETS, ids=["shipped", "falco-corpus"][:len(RULESETS)])
def test_engine_fires_what_each_rule_alone_accepts(ruleset) -> None:
    active = [r for r in ruleset.rules if r.enabled]
    events = list(_perturbed(list(_events())))
    fired = 0
    for ev in events:
        expected = [r.name for r in active if r.predicate(ev)]
        fired += bool(expected)
        for form in (ev, Event(ev), MappingProxyType(ev), Plain(ev)):
            assert [m.rule for m in ruleset.evaluate(form)] == expected, (type(form), ev)
            assert ruleset.matches_any(form) is bool(expected)
    assert fired > 20  # the events reach the rules (the attack cases and synthetic ones)
