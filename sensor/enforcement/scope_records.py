"""Manual blocks scoped to a workload, a namespace or a label selector, stored for agents.

`netvigil enforce block --workload/--namespace/--selector` writes deny entries for the
pods running now and, per (selector, direction, protocol, port, network), a *scope
record* in the pinned map `<pin path>/maps/scope_records` (next to the entries: `enforce
cleanup` removes it with them; the CLI creates it on first use, no BPF program reads it).
A record says what the entries say (mode, rule name, expiry) plus which pods they are
for. Every change sets a new stamp in nv_meta[META_SCOPE_RECORDS]; the agent's pod
thread (`RecordSync.poll()`) reads the records at start and again when the stamp
changes, and keeps one PodScopes group per record, so pods of it that start later get
the same manual entries for the time the record has left. Expired records are skipped
and deleted by whoever reads them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rules.enforcement import EnforcementRequest
from sensor.boottime import boot_ns
from sensor.enforcement import bpfsys
from sensor.enforcement.errors import BPFSyscallError, EnforcementError, InvalidEntryError
from sensor.enforcement.keys import (
    DIR_INGRESS, DIRECTION_NAMES, META_SCOPE_RECORDS, MODE_NAMES, MODES, ORIGIN_MANUAL, PROTOCOL_NAMES,
    DenyKey,
)
from sensor.enforcement.maps import EnforcementMaps
from sensor.enforcement.pod_scopes import PodScopes, Selector, parse_selector

log = logging.getLogger(__name__)

MAP_NAME = "scope_records"
KEY_SIZE = 16               # sha256 prefix of the record's identity
VALUE_SIZE = 2048           # u32 length + the record as JSON
MAX_RECORDS = 1024
MAX_JSON = VALUE_SIZE - 4
GROUP_KINDS = ("workload", "namespace", "selector")
RESYNC_S = 30.0
"""How often the agent re-reads the records even when the stamp did not change."""
_LEN = struct.Struct("=I")


@dataclass(frozen=True, order=True)
class ScopeRecord:
    """One stored manual block for the pods a selector names (now and later)."""

    kind: str            # workload | namespace | selector (the CLI option)
    selector: str        # the option's value, e.g. shop/Deployment/web
    direction: int       # keys.DIR_EGRESS | keys.DIR_INGRESS
    protocol: int        # 0 any, 6 tcp, 17 udp
    port: int            # 0 any
    network: str         # CIDR text, normalised
    mode: int            # keys.MODE_AUDIT | keys.MODE_ENFORCE
    rule: str = "manual"
    expires_ns: int = 0  # CLOCK_BOOTTIME, 0 = never
    created_ns: int = 0

    @classmethod
    def build(cls, kind: str, selector: str, template: DenyKey, *, mode: str = "enforce",
              rule: str = "manual", ttl_s: float | None = None, now_ns: int | None = None) -> ScopeRecord:
        """A validated record for the entries `template` describes (its scope is ignored);
        InvalidEntryError names the option when the selector is bad or too long to store."""
        if kind not in GROUP_KINDS:
            raise InvalidEntryError(f"scope records are for {', '.join(GROUP_KINDS)}, not {kind!r}")
        parse_selector(kind, selector)
        if mode not in MODES:
            raise InvalidEntryError(f"bad mode {mode!r}: audit|enforce")
        now = boot_ns() if now_ns is None else now_ns
        rec = cls(kind, selector, template.direction, template.protocol, template.port, template.network,
                  MODES[mode], rule, 0 if not ttl_s else now + int(ttl_s * 1e9), now)
        size = len(rec._json())
        if size > MAX_JSON:
            raise InvalidEntryError(f"--{kind} {selector!r}: too long to store as a scope record "
                                    f"({size} bytes with the rule name, at most {MAX_JSON})")
        return rec

    @property
    def pod_selector(self) -> Selector:
        """The pods the record is for."""
        return parse_selector(self.kind, self.selector)

    @property
    def template(self) -> DenyKey:
        """The entry the record stands for, with scope 0 (safety checks, messages)."""
        return DenyKey(0, self.direction, self.protocol, self.port, self.network)

    def key(self) -> bytes:
        """Map key: the same selector and entry give the same key (mode, rule, TTL aside)."""
        s = self.pod_selector
        ident = [self.kind, s.namespace, s.workload_kind, s.workload_name, sorted(s.labels), s.pod_name,
                 self.direction, self.protocol, self.port, self.network]
        return hashlib.sha256(json.dumps(ident).encode()).digest()[:KEY_SIZE]

    def _json(self) -> bytes:
        return json.dumps({
            "kind": self.kind, "selector": self.selector,
            "direction": DIRECTION_NAMES[self.direction], "proto": PROTOCOL_NAMES[self.protocol],
            "port": self.port, "cidr": self.network, "mode": MODE_NAMES[self.mode], "rule": self.rule,
            "expires_ns": self.expires_ns, "created_ns": self.created_ns,
        }, separators=(",", ":")).encode()

    def pack(self) -> bytes:
        """Map value bytes."""
        data = self._json()
        return (_LEN.pack(len(data)) + data).ljust(VALUE_SIZE, b"\x00")

    @classmethod
    def unpack(cls, raw: bytes) -> ScopeRecord:
        """Record from map value bytes (InvalidEntryError when they are not one)."""
        (n,) = _LEN.unpack_from(raw)
        try:
            d = json.loads(raw[_LEN.size:_LEN.size + n])
            key = DenyKey.build(0, d["direction"], d["proto"], int(d["port"]), d["cidr"])
            rec = cls(d["kind"], d["selector"], key.direction, key.protocol, key.port, key.network,
                      MODES[d["mode"]], str(d["rule"]), int(d["expires_ns"]), int(d["created_ns"]))
            rec.pod_selector   # noqa: B018 (validates)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidEntryError(f"not a scope record: {exc}") from None
        return rec

    def expired(self, now_ns: int) -> bool:
        """True once the record's TTL is over."""
        return self.expires_ns != 0 and self.expires_ns <= now_ns

    def request(self, now_ns: int) -> EnforcementRequest:
        """The request a new pod of the record gets (its cgroup is filled in by PodScopes)."""
        left = math.inf if self.expires_ns == 0 else max(0.0, (self.expires_ns - now_ns) / 1e9)
        return EnforcementRequest(
            self.rule, "deny", "listen_port" if self.direction == DIR_INGRESS else "remote", self.kind,
            left, MODE_NAMES[self.mode], sys.maxsize, None, cidrs=(self.network,),
            ports=(self.port,) if self.port else (), protocol=PROTOCOL_NAMES[self.protocol])

    def describe(self) -> str:
        """`workload shop/web: egress tcp 203.0.113.7/32 port 443` for messages."""
        return f"{self.kind} {self.selector}: {self.template.describe()}"


class ScopeRecords:
    """The scope records next to one set of pinned enforcement maps."""

    def __init__(self, maps: EnforcementMaps) -> None:
        self.maps = maps
        self.path = maps.layout.map_path(MAP_NAME)
        self._map: bpfsys.PinnedMap | None = None

    def _open(self, create: bool) -> bpfsys.PinnedMap | None:
        if self._map is None:
            try:
                if create:
                    m = bpfsys.PinnedMap.open_or_create(
                        self.path, bpfsys.BPF_MAP_TYPE_HASH, KEY_SIZE, VALUE_SIZE, MAX_RECORDS,
                        bpfsys.BPF_F_NO_PREALLOC, "nv_scope_recs")
                elif os.path.exists(self.path):
                    m = bpfsys.PinnedMap.open(self.path)
                else:
                    return None
            except BPFSyscallError as exc:
                raise EnforcementError(f"scope records {self.path}: {exc}") from None
            if (m.key_size, m.value_size) != (KEY_SIZE, VALUE_SIZE):
                m.close()
                raise EnforcementError(f"{self.path} has another layout (left by a different netvigil "
                                       "version): run `netvigil enforce cleanup`")
            self._map = m
        return self._map

    def close(self) -> None:
        """Close the map's fd (the pin stays)."""
        if self._map is not None:
            self._map.close()
            self._map = None

    def __enter__(self) -> ScopeRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stamp(self) -> int:
        """The change stamp (a new value after every write or removal)."""
        return self.maps.meta_get(META_SCOPE_RECORDS)

    def _touch(self) -> None:
        self.maps.meta_set(META_SCOPE_RECORDS, int.from_bytes(os.urandom(8), "little") | 1)

    def put(self, records: Iterable[ScopeRecord]) -> int:
        """Write (or replace) records; returns how many."""
        records = list(records)
        if not records:
            return 0
        m = self._open(create=True)
        assert m is not None
        try:
            for rec in records:
                m.update(rec.key(), rec.pack())
        except BPFSyscallError as exc:
            raise EnforcementError(f"cannot store scope record in {self.path}: {exc}") from None
        finally:
            self._touch()
        return len(records)

    def remove(self, records: Iterable[ScopeRecord]) -> int:
        """Delete the records with these identities; returns how many existed."""
        m = self._open(create=False)
        if m is None:
            return 0
        n = sum(m.delete(rec.key()) for rec in records)
        if n:
            self._touch()
        return n

    def records(self, now_ns: int | None = None) -> list[ScopeRecord]:
        """Every live record; expired (and unreadable) ones are deleted on the way."""
        m = self._open(create=False)
        if m is None:
            return []
        now = boot_ns() if now_ns is None else now_ns
        out: list[ScopeRecord] = []
        swept = 0
        for key, raw in m.items():
            try:
                rec = ScopeRecord.unpack(raw)
            except InvalidEntryError as exc:
                log.warning("enforcement: dropping %s entry %s: %s", self.path, key.hex(), exc)
                rec = None
            if rec is None or rec.expired(now):
                swept += m.delete(key)
                continue
            out.append(rec)
        if swept:
            self._touch()
        return sorted(out)

    def clear(self, rule: str | None = None) -> int:
        """Delete every record (or those of one rule); returns how many."""
        return self.remove(r for r in self.records() if rule is None or r.rule == rule)


class RecordSync:
    """Keeps one PodScopes group per stored record (the agent's pod thread calls poll())."""

    def __init__(self, maps: EnforcementMaps, pod_scopes: PodScopes,
                 clock: Callable[[], float] = time.monotonic, resync_s: float = RESYNC_S) -> None:
        self.store = ScopeRecords(maps)
        self.pod_scopes = pod_scopes
        self._clock = clock
        self._resync_s = resync_s
        self._stamp: int | None = None
        self._next = 0.0
        self._have: dict[bytes, ScopeRecord] = {}

    def poll(self) -> bool:
        """Re-read the records when they changed (or every RESYNC_S); True when it read them."""
        stamp = self.store.stamp()   # before reading: a change made meanwhile shows next time
        if stamp == self._stamp and self._clock() < self._next:
            return False
        self._next = self._clock() + self._resync_s
        self._stamp = stamp      # a store that cannot be read is retried on change or resync
        now = boot_ns()
        try:
            want = {rec.key(): rec for rec in self.store.records(now)}
        except EnforcementError as exc:
            log.warning("enforcement: cannot read the stored manual blocks: %s", exc)
            return False
        finally:
            self.store.close()   # the pin may be removed (cleanup) and made again
        for key, rec in self._have.items():
            if want.get(key) != rec:
                self.pod_scopes.drop_group(key.hex())
        for key, rec in want.items():
            if self._have.get(key) != rec:
                self.pod_scopes.remember(key.hex(), rec.pod_selector, rec.request(now), ORIGIN_MANUAL)
                log.info("enforcement: covering pods that start later for the manual block %s",
                         rec.describe())
        self._have = want
        return True
