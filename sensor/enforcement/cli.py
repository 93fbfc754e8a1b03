"""`netvigil enforce ...` sub-commands.

They work on the pinned maps directly (no compilation), so they act on a
running agent's enforcement as well as on enforcement left by a dead one.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich.table import Table

from rules import units
from rules.command_help import add_command
from sensor import cgroups, terminal
from sensor.boottime import boot_ns
from sensor.enforcement.datapath import KIND_CGROUP, remove_all
from sensor.enforcement.errors import InvalidEntryError
from sensor.enforcement.keys import (
    DIRECTION_NAMES, MODE_NAMES, ORIGIN_NAMES, PROTOCOL_NAMES, DenyKey,
)
from sensor.enforcement.layout import DEFAULT_BASE, HOOK_OF_ATTACH_TYPE, PinLayout
from sensor.enforcement.manager import manual_entries, scope_label
from sensor.enforcement.maps import EnforcementMaps
from sensor.enforcement.safety import SafetyList
from sensor.enforcement.scope_records import GROUP_KINDS, ScopeRecord, ScopeRecords

def parse_duration(text: str) -> float:
    """A --ttl value in the one duration grammar (rules/units.py): '90', '30s', '1d'."""
    try:
        return units.parse_duration(text)
    except units.UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    try:
        p = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port {text!r}") from None
    if not 1 <= p <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {text!r} (1..65535)")
    return p


def register(sub: argparse._SubParsersAction) -> None:
    """Add `enforce list|block|unblock|flush|status|cleanup` to the top-level parser."""
    p = add_command(
        sub, "enforce", help="list and manage deny entries",
        description="Inspect and change the deny entries in the pinned BPF maps (docs/enforcement.md). "
                    "The commands act on the maps directly, so they work while an agent runs and "
                    "when none does. Needs root.",
        examples=["netvigil enforce list",
                  "netvigil enforce block --cidr 203.0.113.7 --port 443 --pod shop/cart-7d9f --ttl 1h",
                  "netvigil enforce status",
                  "netvigil enforce --pin-path /sys/fs/bpf/netvigil-test list --json"])
    p.add_argument("--pin-path", type=Path, default=DEFAULT_BASE,
                   help=f"bpffs directory of the enforcement maps (default {DEFAULT_BASE})")
    esub = p.add_subparsers(dest="enforce_command", required=True, metavar="ACTION",
                            help="what to do (each has its own --help)")

    ls = add_command(
        esub, "list", help="entries with rule, scope, TTL left and hit counts",
        description="Every deny entry: the rule that made it (or manual), enforce or audit, "
                    "where it applies (cgroup, pod, node), what it denies, the TTL left and "
                    "how often it was hit; then the stored scope records of manual "
                    "--workload/--namespace/--selector blocks (with --json: \"type\": "
                    "\"scope_record\" objects after the \"type\": \"entry\" ones).",
        examples=["netvigil enforce list", "netvigil enforce list --rule 'Outbound to mining pool'",
                  "netvigil enforce list --json | jq -c 'select(.hits > 0)'"])
    ls.add_argument("--json", action="store_true", help="one JSON object per entry")
    ls.add_argument("--rule", help="only entries of this rule")
    ls.set_defaults(func=cmd_list)

    for name, helptext, description, examples, func in (
            ("block", "add manual deny entries",
             "Deny connections to (or, with --listen, listening on) the given networks and ports, "
             "for one scope: cgroups, the node, pods, a workload, a namespace or a label selector. "
             "One entry is added per combination of scope, network and port. A --workload, "
             "--namespace or --selector block is also stored as scope records next to the entries: "
             "a running agent (or one started later) gives pods of it that start later the same "
             "entries until the TTL ends, so the block works even when no pod matches yet. "
             "Addresses on the safety list are refused.",
             ["netvigil enforce block --cidr 203.0.113.7 --port 443 --proto tcp "
              "--cgroup /system.slice/app.service --ttl 1h",
              "netvigil enforce block --listen --port 4444 --node --mode audit",
              "netvigil enforce block --cidr 203.0.113.0/24 --workload shop/Deployment/checkout",
              "netvigil enforce block --cidr 203.0.113.0/24 --selector shop/app=checkout,tier=web",
              "netvigil enforce block --cidr 203.0.113.0/24 --namespace shop --ttl 2h  "
              "# pods of shop that start later too"],
             cmd_block),
            ("unblock", "remove deny entries with these keys",
             "Remove the entries with exactly these keys (the options given to `block`, without "
             "--ttl/--mode/--rule) and, for --workload/--namespace/--selector, their scope records "
             "(pods that start later are no longer covered). Exit 1 when none was there.",
             ["netvigil enforce unblock --cidr 203.0.113.7 --port 443 --proto tcp "
              "--cgroup /system.slice/app.service",
              "netvigil enforce unblock --cidr 203.0.113.0/24 --workload shop/Deployment/checkout",
              "netvigil enforce unblock --listen --port 4444 --node"],
             cmd_unblock)):
        b = add_command(esub, name, help=helptext, description=description, examples=examples)
        b.add_argument("--cidr", action="append", default=[],
                       help="remote network (repeatable; default: any address)")
        b.add_argument("--port", action="append", type=_port, default=[],
                       help="remote port (or the listening port with --listen); repeatable; default any")
        b.add_argument("--proto", choices=sorted(PROTOCOL_NAMES.values()), default="any",
                       help="transport protocol (default any)")
        b.add_argument("--listen", action="store_true",
                       help="deny listening on --port (bind), not connecting to a remote")
        where = b.add_mutually_exclusive_group(required=True)
        where.add_argument("--cgroup", action="append", default=[],
                           help="cgroup2 path the entry applies to (and its children); repeatable")
        where.add_argument("--node", action="store_true", help="apply to every process on the node")
        where.add_argument("--pod", action="append", default=[], metavar="NS/NAME",
                           help="a pod on this node (its cgroup: every container of it); repeatable")
        where.add_argument("--workload", metavar="NS/[KIND/]NAME",
                           help="every pod of a workload on this node, now and later (needs the API server)")
        where.add_argument("--namespace", metavar="NS",
                           help="every pod of a namespace on this node, now and later")
        where.add_argument("--selector", metavar="[NS/]KEY=VALUE[,...]",
                           help="every pod on this node with these labels, now and later")
        b.add_argument("--host-root", default="", metavar="PREFIX",
                       help="where the host's /run is mounted, for the runtimes' bundles (in a pod: /host)")
        if name == "block":
            b.add_argument("--ttl", type=parse_duration, help="expire after (90, 30s, 10m, 1h); default never")
            b.add_argument("--mode", choices=("enforce", "audit"), default="enforce",
                           help="enforce: deny (default); audit: allow, but report a verdict")
            b.add_argument("--rule", default="manual", help="rule name shown in verdicts (default manual)")
        b.set_defaults(func=func)

    fl = add_command(
        esub, "flush", help="remove every deny entry (or those of one rule)",
        description="Remove every deny entry and stored scope record, or those of one rule: "
                    "enforcement stops at once, the programs stay attached. Rules' static entries "
                    "come back when the agent next starts.",
        examples=["netvigil enforce flush", "netvigil enforce flush --rule manual"])
    fl.add_argument("--rule", help="only entries of this rule")
    fl.set_defaults(func=cmd_flush)

    st = add_command(
        esub, "status", help="attachments, safety list, kernel counters",
        description="Which programs are attached where (cgroup hooks, tc), the number of "
                    "entries, the safety list (never denied) and the datapath's counters.",
        examples=["netvigil enforce status", "netvigil enforce status --json | jq .counters"])
    st.add_argument("--json", action="store_true", help="the status as one JSON object")
    st.set_defaults(func=cmd_status)

    cl = add_command(
        esub, "cleanup", help="detach every program and remove every pinned map",
        description="Uninstall enforcement: detach the cgroup programs, remove the tc filters "
                    "(and the clsact qdisc netvigil created) and every pinned map under "
                    "--pin-path. The same as `netvigil run --cleanup`.",
        examples=["netvigil enforce cleanup"])
    cl.set_defaults(func=cmd_cleanup)


def _open(args: argparse.Namespace) -> EnforcementMaps:
    return EnforcementMaps(PinLayout(args.pin_path))


def _group_option(args: argparse.Namespace) -> tuple[str, str] | None:
    """(option, value) of --workload/--namespace/--selector, when given."""
    for kind in GROUP_KINDS:
        value = getattr(args, kind, None)
        if value:
            return kind, value
    return None


def _pod_scope_ids(args: argparse.Namespace) -> list[int] | None:
    """Cgroup ids of the pods --pod/--workload/--namespace/--selector name now (None: not
    given). A --pod that matches no running pod is an error; a group option is not (its
    scope record covers pods that start later)."""
    from sensor.enforcement.pod_scopes import PodScopes, parse_selector, pods_on_node  # noqa: PLC0415

    group = _group_option(args)
    given = [("pod", v) for v in args.pod] + ([group] if group else [])
    if not given:
        return None
    selectors = [parse_selector(kind, value) for kind, value in given]
    needs_api = any(s.workload_name for s in selectors)
    wants_api = needs_api or any(s.labels for s in selectors)   # CRI-O bundles carry labels too
    scopes = PodScopes()
    api = _api_pods if needs_api else _api_pods_if_any if wants_api else None
    for pod in pods_on_node(args.host_root, api):
        scopes.note(pod)
    ids: list[int] = []
    for (kind, value), selector in zip(given, selectors):
        matched = scopes.pods(selector)
        paths = [p for p in (scopes.cgroup_of(pod.uid) for pod in matched) if p is not None]
        if not paths and kind == "pod":
            where = "the runtimes' bundles" + (" and the API server" if needs_api else "")
            raise InvalidEntryError(f"--{kind} {value}: no running pod on this node matches (looked in {where})")
        ids += [cgroups.cgroup_id(p) for p in paths]
    return ids


def _api_pods() -> list:
    """This node's pods from the API server (one list), or an error saying why not."""
    try:
        from sensor.k8s.watcher import K8sWatcher  # noqa: PLC0415
    except ImportError as exc:
        raise InvalidEntryError(f"workload and label selectors need the API server: {exc}") from None
    watcher = K8sWatcher()
    if not watcher.start():
        raise InvalidEntryError(f"workload and label selectors need the API server: {watcher.status}")
    try:
        if not watcher.pods.synced.wait(10):
            raise InvalidEntryError("the API server did not list this node's pods within 10 s")
        return watcher.pods.pods()
    finally:
        watcher.stop()


def _api_pods_if_any() -> list:
    try:
        return _api_pods()
    except InvalidEntryError:
        return []


def _templates(args: argparse.Namespace) -> list[DenyKey]:
    """The entries the options describe, with scope 0 (one per network and port)."""
    if args.listen and not args.port:
        raise InvalidEntryError("--listen needs --port")
    if not args.listen and not args.cidr and not args.port:
        raise InvalidEntryError("give --cidr and/or --port (refusing to deny every destination)")
    nets = args.cidr or ["::/0"]
    ports = args.port or [0]
    direction = "ingress" if args.listen else "egress"
    return [DenyKey.build(0, direction, args.proto, p, n) for p in ports for n in nets]


@dataclass(frozen=True)
class _Target:
    """What block/unblock act on: entries for the scopes that exist now, and the scope
    records of a --workload/--namespace/--selector (empty otherwise)."""

    templates: list[DenyKey]
    keys: list[DenyKey]
    records: list[ScopeRecord]


def _target_from_args(args: argparse.Namespace) -> _Target:
    templates = _templates(args)
    group = _group_option(args)
    records = [ScopeRecord.build(group[0], group[1], t, mode=getattr(args, "mode", "enforce"),
                                 rule=getattr(args, "rule", "manual"), ttl_s=getattr(args, "ttl", None))
               for t in templates] if group else []
    pod_ids = _pod_scope_ids(args)
    if args.node:
        scopes = [0]
    elif pod_ids is not None:
        scopes = pod_ids
    else:
        mount = cgroups.mount()
        scopes = [cgroups.cgroup_id(cgroups.resolve(p, mount)) for p in args.cgroup]
    return _Target(templates, [replace(t, scope=s) for s in scopes for t in templates], records)


def _ttl_left_s(expires_ns: int, now: int) -> float | None:
    """Seconds an entry or record has left (None: never expires; 0: expired)."""
    return None if expires_ns == 0 else max(0.0, (expires_ns - now) / 1e9)


def _ttl_left(expires_ns: int, now: int) -> str:
    left = _ttl_left_s(expires_ns, now)
    if left is None:
        return "never"
    if left <= 0:
        return "expired"
    if left >= 3600:
        return f"{left / 3600:.1f}h"
    if left >= 60:
        return f"{left / 60:.1f}m"
    return f"{left:.0f}s"


LIST_COLUMNS = ("rule", "mode", "origin", "scope", "direction", "proto", "port", "cidr",
                "ttl_left", "hits")
RECORD_COLUMNS = ("rule", "mode", "scope", "direction", "proto", "port", "cidr", "ttl_left")


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _records(n: int) -> str:
    return f"{n} scope record{'' if n == 1 else 's'}"


def cmd_list(args: argparse.Namespace) -> int:
    """Print the entries and the stored scope records."""
    with _open(args) as maps:
        entries = maps.entries()
        names = maps.rule_names()
        with ScopeRecords(maps) as store:
            records = store.records()
    try:
        index: cgroups.CgroupIndex | None = cgroups.CgroupIndex(cgroups.mount())
    except cgroups.CgroupError:
        index = None
    now = boot_ns()
    rows = []
    for key, val in sorted(entries.items(), key=lambda kv: (names.get(kv[1].rule_id, ""), kv[0])):
        rule = names.get(val.rule_id, f"rule#{val.rule_id}")
        if args.rule and rule != args.rule:
            continue
        rows.append({
            "type": "entry",
            "rule": rule, "mode": MODE_NAMES.get(val.mode, "?"), "origin": ORIGIN_NAMES.get(val.origin, "?"),
            "scope": scope_label(key.scope, index), "scope_cgroup_id": key.scope,
            "direction": DIRECTION_NAMES.get(key.direction, "?"),
            "proto": PROTOCOL_NAMES.get(key.protocol, "?"), "port": key.port or "any",
            "cidr": key.network, "ttl_left": _ttl_left(val.expires_ns, now),
            "ttl_left_s": _ttl_left_s(val.expires_ns, now),
            "hits": val.hits,
        })
    recs = [{
        "type": "scope_record", "rule": r.rule, "mode": MODE_NAMES[r.mode], "origin": "manual",
        "scope": f"{r.kind} {r.selector}", "scope_kind": r.kind, "selector": r.selector,
        "direction": DIRECTION_NAMES[r.direction], "proto": PROTOCOL_NAMES[r.protocol],
        "port": r.port or "any", "cidr": r.network, "ttl_left": _ttl_left(r.expires_ns, now),
        "ttl_left_s": _ttl_left_s(r.expires_ns, now),
    } for r in records if not args.rule or r.rule == args.rule]
    if args.json or not sys.stdout.isatty():
        for r in rows + recs:
            print(json.dumps(r))
        return 0
    out = terminal.console(sys.stdout, terminal.color_of(args))
    if not rows:
        out.print("(no deny entries)")
    else:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for c in LIST_COLUMNS:
            table.add_column(c.upper(), no_wrap=True, justify="right" if c == "hits" else "left")
        for r in rows:
            cells = [str(r[c]) for c in LIST_COLUMNS]
            table.add_row(*cells, style="bold red" if r["mode"] == "enforce" else None)
        out.print(table)
    if recs:
        out.print(f"\n{_records(len(recs))}: pods of these scopes that start later get the same "
                  "entries while an agent runs")
        table = Table(box=None, pad_edge=False, header_style="bold")
        for c in RECORD_COLUMNS:
            table.add_column(c.upper(), no_wrap=True)
        for r in recs:
            table.add_row(*(str(r[c]) for c in RECORD_COLUMNS))
        out.print(table)
    return 0


def cmd_block(args: argparse.Namespace) -> int:
    """Add manual entries (and, for a workload/namespace/selector, its scope records)."""
    target = _target_from_args(args)
    with _open(args) as maps:
        safety = SafetyList(frozenset(maps.safety()))
        protected = [k for k in target.templates if safety.covers(k)]
        if protected:
            raise InvalidEntryError(
                "on the safety list, never denied: " + ", ".join(k.network for k in protected))
        with ScopeRecords(maps) as store:
            store.put(target.records)
        manual_entries(maps, target.keys, mode=args.mode, ttl_s=args.ttl, rule=args.rule)
    for k in target.keys:
        print(f"blocked {k.describe()} ({args.mode})")
    if target.records:
        first = target.records[0]
        now = "" if target.keys else "no pod matches now; "
        print(f"recorded --{first.kind} {first.selector} ({_records(len(target.records))}): {now}pods that "
              "start later are covered while an agent runs")
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    """Remove entries with the given keys (and the scope records of the same options)."""
    target = _target_from_args(args)
    removed = 0
    with _open(args) as maps:
        for k in target.keys:
            removed += maps.remove(k)
        with ScopeRecords(maps) as store:
            records = store.remove(target.records)
    print(f"removed {_entries(removed)}" + (f" and {_records(records)}" if target.records else ""))
    return 0 if removed or records else 1


def cmd_flush(args: argparse.Namespace) -> int:
    """Remove every entry and scope record (or those of one rule)."""
    with _open(args) as maps:
        if args.rule:
            names = maps.rule_names()
            n = 0
            for key, val in maps.entries().items():
                if names.get(val.rule_id) == args.rule:
                    n += maps.remove(key)
        else:
            n = maps.flush()
        with ScopeRecords(maps) as store:
            records = store.clear(args.rule)
    print(f"removed {_entries(n)}" + (f" and {_records(records)}" if records else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Attachments, safety list and counters."""
    with _open(args) as maps:
        recs = maps.attach_records()
        with ScopeRecords(maps) as store:
            n_records = len(store.records())
        info = {
            "pin_path": str(args.pin_path),
            "attachments": [{"kind": "cgroup" if r.kind == KIND_CGROUP else "tc",
                             "target": r.target, "prog_id": r.prog_id,
                             "hook": HOOK_OF_ATTACH_TYPE.get(r.attach_type, str(r.attach_type))
                             if r.kind == KIND_CGROUP else ("ingress", "egress")[r.attach_type & 1]}
                            for r in recs.values()],
            "safety": [f"{s.network}" + (f" port {s.port}" if s.port else "") for s in sorted(maps.safety())],
            "entries": len(maps.entries()),
            "scope_records": n_records,
            "counters": maps.counters(),
        }
    if args.json or not sys.stdout.isatty():
        print(json.dumps(info))
        return 0
    out = terminal.console(sys.stdout, terminal.color_of(args))
    out.print(f"pinned under {info['pin_path']}: {_entries(info['entries'])}, "
              f"{_records(info['scope_records'])}")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for c in ("KIND", "HOOK", "TARGET", "PROG ID"):
        table.add_column(c, no_wrap=True)
    for a in info["attachments"]:
        table.add_row(a["kind"], a["hook"], str(a["target"]), str(a["prog_id"]))
    out.print(table if info["attachments"] else "(nothing attached)")
    out.print("safety list: " + (", ".join(info["safety"]) or "(empty)"))
    out.print("counters: " + ", ".join(f"{k}={v}" for k, v in info["counters"].items()))
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Remove everything."""
    done = remove_all(PinLayout(args.pin_path))
    for line in done:
        print(line)
    if not done:
        print(f"nothing installed under {args.pin_path}")
    return 0


def main(argv: Sequence[str]) -> int:  # pragma: no cover (debug helper)
    """Run `enforce` alone: main(['list'])."""
    parser = argparse.ArgumentParser(prog="netvigil")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["enforce", *argv])
    return int(args.func(args) or 0)
