"""The rule engine: compiled rules indexed by evt.type; every matching rule fires."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rules.analysis import equality_fields, field_uses, required_values, specialize
from rules.checker import CConst, CNode
from rules.codegen import CodeGen
from rules.enforcement import EnforcementRequest, EnforceSpec, request_for_event, static_request
from rules.errors import Position
from rules.event import Event
from rules.match import RuleMatch
from rules.output import OutputTemplate

log = logging.getLogger(__name__)
#: A bucket with at least this many rules gets a second-level index on a field.
SUB_INDEX_MIN_RULES = 12
SUB_INDEX_MIN_CONSTRAINED = 6
NEVER = CConst(False)

_stored_get = Event.stored_get
Matcher = Callable[[Mapping[str, Any]], list[int]]


@dataclass
class CompiledRule:
    """A loaded rule: its checked condition, compiled predicate and alert material."""

    name: str
    desc: str
    priority: str
    tags: tuple[str, ...]
    output: OutputTemplate
    enabled: bool
    condition: CNode
    predicate: Callable[[Mapping[str, Any]], bool]
    evt_types: frozenset | None
    enforce: EnforceSpec | None = None
    file: str = ""
    position: Position | None = None
    source: str = "syscall"


@dataclass(frozen=True)
class SkippedRule:
    """A rule that uses something netvigil does not support."""

    name: str
    file: str
    reasons: tuple[str, ...]
    position: Position | None = None  # the rule's definition
    first_use: Position | None = None  # where the first unsupported thing appears


@dataclass
class RuleSet:
    """Loaded rules, ready to evaluate events."""

    rules: list[CompiledRule]
    skipped: list[SkippedRule] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    enforce_mode_override: str | None = None
    macros: dict[str, Any] = field(default_factory=dict)  # name -> checker.MacroDef
    lists: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._active = [r for r in self.rules if r.enabled]
        self._dispatch, self._default = _build_index(self._active)
        self._uses: dict[Any, dict[str, frozenset | None]] = {}

    # -- evaluation -----------------------------------------------------------------
    def evaluate(self, event: Mapping[str, Any]) -> list[RuleMatch]:
        """Every enabled rule that matches ``event`` (in rule order).

        Pure: nothing outside the returned matches changes. A match of a rule with
        ``enforce:`` carries its EnforcementRequest; acting on it is the caller's job.
        """
        try:
            # evt.type is stored: an Event answers it without its (Python-level) get
            t = _stored_get(event, "evt.type") if event.__class__ is Event \
                else event.get("evt.type")
            fn = self._dispatch.get(t, self._default)
        except TypeError:
            fn = self._default
        if fn is _no_match:  # no rule can match this type: no call at all
            return []
        hits = fn(event)
        if not hits:
            return []
        return [self._match(self._active[i], event) for i in hits]

    def matches_any(self, event: Mapping[str, Any]) -> bool:
        """True if some enabled rule matches ``event`` (no output, no enforcement)."""
        try:
            # evt.type is stored: an Event answers it without its (Python-level) get
            t = _stored_get(event, "evt.type") if event.__class__ is Event \
                else event.get("evt.type")
            fn = self._dispatch.get(t, self._default)
        except TypeError:
            fn = self._default
        return bool(fn(event))

    def fields_read(self, evt_type: str) -> dict[str, frozenset | None]:
        """Fields whose values decide which rules match an event of ``evt_type``.

        The rules are pure functions of these fields: two events of that type that agree
        on them (ints mapped to a frozenset only need to agree on how they compare with
        its constants, see ``rules.analysis.field_uses``) match the same rules. Lets a
        caller (e.g. replay) remember results instead of evaluating repeated events.
        """
        uses = self._uses.get(evt_type)
        if uses is None:
            uses = {"evt.type": None}
            for r in self._active:
                if r.evt_types is None or evt_type in r.evt_types:
                    for name, consts in field_uses(r.condition).items():
                        if name not in uses:
                            uses[name] = consts
                        elif uses[name] is not None:
                            uses[name] = None if consts is None else uses[name] | consts
            self._uses[evt_type] = uses
        return uses

    def _match(self, rule: CompiledRule, event: Mapping[str, Any]) -> RuleMatch:
        text, fields = rule.output.render(event)
        req: EnforcementRequest | None = None
        if rule.enforce is not None:
            req = request_for_event(rule.name, rule.enforce, event, self.enforce_mode_override)
        t = event.get("evt.time")
        return RuleMatch(rule.name, rule.priority, text, fields, rule.tags, rule.source,
                         t if isinstance(t, int) and not isinstance(t, bool) else 0, event, req)

    def static_enforcements(self) -> list[EnforcementRequest]:
        """Enforcement entries known at load (``enforce.static`` of enabled rules)."""
        out = []
        for rule in self._active:
            if rule.enforce is not None:
                req = static_request(rule.name, rule.enforce, self.enforce_mode_override)
                if req is not None:
                    out.append(req)
        return out

    # -- introspection --------------------------------------------------------------
    def rule(self, name: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.name == name), None)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, evt_type: str) -> list[str]:
        """Names of the enabled rules an event of ``evt_type`` is tried against."""
        return [r.name for r in self._active
                if r.evt_types is None or evt_type in r.evt_types]


def _build_index(rules: Sequence[CompiledRule]) -> tuple[dict[Any, Matcher], Matcher]:
    """evt.type -> matcher of the rules that can match it (each condition specialized to
    that type), and the matcher for any other type (the rules without one)."""
    gen = CodeGen()
    by_type: dict[Any, list[int]] = defaultdict(list)
    untyped: list[int] = []
    for i, rule in enumerate(rules):
        if rule.evt_types is None:
            untyped.append(i)
        else:
            for t in rule.evt_types:
                by_type[t].append(i)
    dispatch = {}
    for t, idxs in by_type.items():
        conds = {}
        for i in sorted(set(idxs + untyped)):
            cond = specialize(rules[i].condition, "evt.type", t)
            if cond != NEVER:
                conds[i] = cond
        dispatch[t] = _matcher(gen, rules, conds, {"evt.type": t})
    return dispatch, _matcher(gen, rules, {i: rules[i].condition for i in untyped}, {})


def _matcher(gen: CodeGen, rules: Sequence[CompiledRule], conds: dict[int, CNode],
             known: dict[str, Any]) -> Matcher:
    """A matcher for the rules ``conds`` holds (index -> condition), in index order."""
    idxs = sorted(conds)
    if not idxs:
        return _no_match

    def flat(key: Sequence[int]) -> Matcher:
        return gen.matcher([(i, conds[i]) for i in sorted(key)], known) if key else _no_match

    if len(idxs) < SUB_INDEX_MIN_RULES:
        return flat(idxs)
    # Second level: split on the field most rules pin to values (e.g. proc.name).
    counts: dict[str, int] = defaultdict(int)
    for i in idxs:
        for f in equality_fields(conds[i]):
            if f != "evt.type":
                counts[f] += 1
    if not counts:
        return flat(idxs)
    best = max(sorted(counts), key=lambda f: counts[f])
    constrained: dict[int, frozenset] = {}
    for i in idxs:
        values = required_values(conds[i], best)
        if values is not None:
            constrained[i] = values
    if len(constrained) < SUB_INDEX_MIN_CONSTRAINED:
        return flat(idxs)
    free = [i for i in idxs if i not in constrained]
    per_value: dict[Any, list[int]] = defaultdict(list)
    for i, values in constrained.items():
        for v in values:
            per_value[v].append(i)
    default = flat(free)
    cache: dict[tuple[int, ...], Matcher] = {}
    table: dict[Any, Matcher] = {}
    for v, vidxs in per_value.items():
        key = tuple(sorted(set(vidxs + free)))
        if key not in cache:
            cache[key] = flat(key)
        table[v] = cache[key]
    get = table.get

    def sub_indexed(e: Mapping[str, Any]) -> list[int]:
        try:
            fn = get(e.get(best), default)
        except TypeError:
            fn = default
        return fn(e)

    return sub_indexed


def _no_match(e: Mapping[str, Any]) -> list[int]:
    return []
