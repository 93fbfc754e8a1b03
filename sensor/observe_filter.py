"""`netvigil observe` filters: Hubble-like flags plus a Falco condition, as one predicate.

A filter spec is plain JSON (it travels over the local API socket):
`{"types": [...], "pods": ["NS/NAME" | "NAME"], "namespaces": [...], "labels": ["k=v" | "k"],
"processes": [...], "ips": ["10.0.0.1" | "10.0.0.0/8"], "ports": [443], "verdicts": [...],
"where": "COND", "since_ns": 0}`. Values of one key are alternatives (OR); keys combine
with AND, as Hubble's flags do. `where` compiles with the rules package. Alerts are
matched on their `output_fields` (plus `evt.type`-less keys are simply absent).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from rules.compiler import compile_condition
from rules.errors import RulesError
from sensor.errors import SensorError

Predicate = Callable[[Mapping[str, Any]], bool]
IP_FIELDS = ("fd.sip", "fd.cip", "fd.lip", "fd.rip")
PORT_FIELDS = ("fd.sport", "fd.cport", "fd.lport", "fd.rport")
SPEC_KEYS = ("types", "pods", "namespaces", "labels", "processes", "ips", "ports", "verdicts",
             "where", "since_ns")


class FilterError(SensorError):
    """An observe filter that cannot be used (the message says which flag)."""


def _strings(spec: Mapping[str, Any], key: str) -> list[str]:
    value = spec.get(key) or []
    if not isinstance(value, list):
        raise FilterError(f"--{key.rstrip('s')}: expected a list")
    return [str(v) for v in value]


def _pod_test(pods: list[str]) -> Predicate:
    wanted = [(p.split("/", 1) if "/" in p else (None, p)) for p in pods]

    def test(e: Mapping[str, Any]) -> bool:
        ns, name = e.get("k8s.ns.name"), e.get("k8s.pod.name")
        return any(name == n and (want_ns is None or ns == want_ns) for want_ns, n in wanted)

    return test


def _label_test(labels: list[str]) -> Predicate:
    wanted = [(lbl.partition("=")[0], lbl.partition("=")[2] if "=" in lbl else None) for lbl in labels]

    def test(e: Mapping[str, Any]) -> bool:
        have = e.get("k8s.pod.labels")
        if not isinstance(have, Mapping):
            return False
        return any(k in have and (v is None or have[k] == v) for k, v in wanted)

    return test


def _ip_test(ips: list[str]) -> Predicate:
    try:
        nets = [ipaddress.ip_network(i, strict=False) for i in ips]
    except ValueError as exc:
        raise FilterError(f"--ip: {exc}") from None

    def test(e: Mapping[str, Any]) -> bool:
        for f in IP_FIELDS:
            v = e.get(f)
            if isinstance(v, str) and v:
                try:
                    addr = ipaddress.ip_address(v)
                except ValueError:
                    continue
                if any(addr in n for n in nets if n.version == addr.version):
                    return True
        return False

    return test


def _port_test(ports: list[str]) -> Predicate:
    try:
        wanted = {int(p) for p in ports}
    except ValueError:
        raise FilterError(f"--port: expected port numbers, got {ports}") from None
    return lambda e: any(e.get(f) in wanted for f in PORT_FIELDS)


def _process_test(names: list[str]) -> Predicate:
    wanted = set(names)
    return lambda e: e.get("proc.name") in wanted or e.get("proc.exepath") in wanted


def _field_in(field: str, values: list[str]) -> Predicate:
    wanted = set(values)
    return lambda e: e.get(field) in wanted


def compile_filter(spec: Mapping[str, Any]) -> Predicate:
    """One predicate for a filter spec (raises FilterError naming the bad flag)."""
    if not isinstance(spec, Mapping):
        raise FilterError("filter: expected a mapping")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise FilterError(f"filter: unknown key(s) {', '.join(unknown)}")
    tests: list[Predicate] = []
    builders: list[tuple[str, Callable[[list[str]], Predicate]]] = [
        ("types", lambda v: _field_in("evt.type", v)), ("pods", _pod_test),
        ("namespaces", lambda v: _field_in("k8s.ns.name", v)), ("labels", _label_test),
        ("processes", _process_test), ("ips", _ip_test), ("ports", _port_test),
        ("verdicts", lambda v: _field_in("netvigil.verdict", v))]
    for key, build in builders:
        values = _strings(spec, key)
        if values:
            tests.append(build(values))
    since = spec.get("since_ns")
    if since:
        tests.append(lambda e: isinstance(e.get("evt.time"), int) and e["evt.time"] >= since)
    where = spec.get("where")
    if where:
        try:
            cond = compile_condition(str(where))
        except RulesError as exc:
            raise FilterError(f"--where: {exc}") from None
        tests.append(_safe(cond))
    if not tests:
        return lambda _e: True
    if len(tests) == 1:
        return tests[0]
    return lambda e: all(t(e) for t in tests)


def _safe(pred: Predicate) -> Predicate:
    def test(e: Mapping[str, Any]) -> bool:
        try:
            return bool(pred(e))
        except Exception:  # noqa: BLE001 - an event the condition cannot evaluate does not match
            return False

    return test


def prefilter_types(spec: Mapping[str, Any]) -> list[str] | None:
    """The `evt.type` values the hot path may pre-select on (None: every type)."""
    types = _strings(spec, "types")
    return types or None
