"""The pinned enforcement maps, opened without compiling anything.

Both the agent and `netvigil enforce ...` commands use this class, so
operators can list and change entries while an agent runs.
"""
from __future__ import annotations

import errno
import struct
from collections import Counter
from collections.abc import Iterable

from sensor.enforcement import bpfsys, keys
from sensor.enforcement.errors import BPFSyscallError, EnforcementError, NotInstalledError
from sensor.enforcement.keys import AttachRecord, DenyKey, DenyValue, SafeKey
from sensor.enforcement.layout import PinLayout

STAT_NAMES = {0: "verdicts_lost", 1: "denied", 2: "audited", 3: "safety_overrides"}


class EnforcementMaps:
    """Typed access to the pinned deny, scope, safety, rule-name, attach and stats maps."""

    def __init__(self, layout: PinLayout) -> None:
        if not layout.installed():
            raise NotInstalledError(
                f"no enforcement maps pinned under {layout.base} (is the agent installed?)")
        self.layout = layout
        self._ncpu = bpfsys.possible_cpus()
        opened: list[bpfsys.PinnedMap] = []
        try:
            for name in ("deny", "scopes", "ports", "nets", "safe", "rules", "attach", "meta"):
                opened.append(bpfsys.PinnedMap.open(layout.map_path(name)))
            opened.append(bpfsys.PinnedMap.open(layout.map_path("stats"), value_size=8 * self._ncpu))
        except BPFSyscallError as exc:
            for m in opened:
                m.close()
            raise EnforcementError(
                f"pinned enforcement maps under {layout.base} are incomplete or from another "
                f"netvigil version ({exc}): run `netvigil enforce cleanup`") from None
        (self.deny, self.scopes, self.ports, self.nets, self.safe, self.rules, self.attach,
         self.meta, self.stats_map) = opened
        if self.deny.key_size != keys.DENY_KEY_SIZE or self.deny.value_size != keys.DENY_VAL_SIZE:
            raise EnforcementError(
                f"pinned deny map under {layout.base} has another layout "
                "(left by a different netvigil version): run `netvigil enforce cleanup`")
        for name, sizes in keys.INDEX_LAYOUTS.items():
            m = getattr(self, name)
            if (m.key_size, m.value_size) != sizes:
                raise EnforcementError(
                    f"pinned {name} index under {layout.base} has another layout (left by a "
                    "different netvigil version): restart the agent with this version, which "
                    "rebuilds it")
        self._rule_ids: dict[str, int] = {}

    def close(self) -> None:
        """Close every fd (pins stay)."""
        for m in (self.deny, self.scopes, self.ports, self.nets, self.safe, self.rules, self.attach,
                  self.meta, self.stats_map):
            m.close()

    def __enter__(self) -> EnforcementMaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- deny entries ----------------------------------------------------

    def entries(self) -> dict[DenyKey, DenyValue]:
        """Every deny entry (expired ones included until swept)."""
        return {DenyKey.unpack(k): DenyValue.unpack(v) for k, v in self.deny.items()}

    def put(self, key: DenyKey, value: DenyValue) -> bool:
        """Insert or replace an entry; True if it was new. The indexes follow."""
        raw_key, raw_value = key.pack(), value.pack()
        try:   # a refresh (the usual case for a detection): the indexes count it already
            self.deny.update(raw_key, raw_value, bpfsys.BPF_EXIST)
            return False
        except BPFSyscallError as exc:
            if exc.errno != errno.ENOENT:
                raise
        self._bump_scope(key, +1)   # before insert: the datapath must see it at once
        try:
            self.deny.update(raw_key, raw_value, bpfsys.BPF_NOEXIST)
            return True
        except BPFSyscallError as exc:
            self._bump_scope(key, -1)
            if exc.errno != errno.EEXIST:
                raise
        self.deny.update(raw_key, raw_value, bpfsys.BPF_EXIST)   # made meanwhile by another writer
        return False

    def remove(self, key: DenyKey) -> bool:
        """Delete an entry; True if it existed."""
        existed = self.deny.delete(key.pack())
        if existed:
            self._bump_scope(key, -1)
        return existed

    def flush(self) -> int:
        """Delete every deny entry; returns how many."""
        n = 0
        for raw in list(self.deny.keys()):
            n += self.deny.delete(raw)
        for index in (self.scopes, self.ports, self.nets):
            for raw in list(index.keys()):
                index.delete(raw)
        self.meta_set(keys.META_WIDE, 0)
        return n

    def _bump_scope(self, key: DenyKey, delta: int) -> None:
        """Count `key` in (delta +1) or out of (-1) the port index and the net index, or
        for a wide entry the scope index and the node's wide count."""
        pkey = key.port_index_key()
        if pkey is not None:
            raw_n = self.ports.lookup(pkey)
            n = max(0, (struct.unpack("=I", raw_n[:4])[0] if raw_n else 0) + delta)
            if n:
                self.ports.update(pkey, struct.pack("=I", n))
            elif raw_n is not None:
                self.ports.delete(pkey)
        slots = key.net_index_slots()
        if slots is not None:
            for nkey, field in slots:
                raw = self.nets.lookup(nkey)
                counts = keys.unpack_net_counts(raw) if raw else [0] * 5
                counts[field] = max(0, counts[field] + delta)
                if any(counts):
                    self.nets.update(nkey, keys.pack_net_counts(counts))
                elif raw is not None:
                    self.nets.delete(nkey)
            return
        # wide: the node's count goes up before and down after the scope's
        if delta > 0:
            self.meta_set(keys.META_WIDE, self.meta_get(keys.META_WIDE) + delta)
        skey = struct.pack("=Q", key.scope)
        raw = self.scopes.lookup(skey)
        counts = keys.unpack_scope_counts(raw) if raw else [0] * 8
        counts[key.combo] = max(0, counts[key.combo] + delta)
        if any(counts):
            self.scopes.update(skey, keys.pack_scope_counts(counts))
        elif raw is not None:
            self.scopes.delete(skey)
        if delta < 0:
            self.meta_set(keys.META_WIDE, max(0, self.meta_get(keys.META_WIDE) + delta))

    def rebuild_scopes(self, entries: Iterable[DenyKey] | None = None) -> None:
        """Recompute the port, net and scope indexes from the deny map (repairs drift from
        concurrent writers, and fills indexes a newer netvigil added)."""
        wanted: dict[int, list[int]] = {}
        ports: Counter[bytes] = Counter()
        nets: dict[bytes, list[int]] = {}
        wide = 0
        for key in (entries if entries is not None else self.entries().keys()):
            pkey = key.port_index_key()
            if pkey is not None:
                ports[pkey] += 1
            slots = key.net_index_slots()
            if slots is None:
                wide += 1
                wanted.setdefault(key.scope, [0] * 8)[key.combo] += 1
                continue
            for nkey, field in slots:
                nets.setdefault(nkey, [0] * 5)[field] += 1
        # additions first, removals after: the datapath never misses a live entry; keys
        # whose counts are right already are not written again
        self.meta_set(keys.META_WIDE, max(wide, self.meta_get(keys.META_WIDE)))
        stale = [(self.ports, _write_changed(self.ports, {k: struct.pack("=I", n) for k, n in ports.items()})),
                 (self.nets, _write_changed(self.nets, {k: keys.pack_net_counts(c) for k, c in nets.items()})),
                 (self.scopes, _write_changed(self.scopes, {struct.pack("=Q", scope): keys.pack_scope_counts(c)
                                                            for scope, c in wanted.items()}))]
        for table, raws in stale:
            for raw in raws:
                table.delete(raw)
        self.meta_set(keys.META_WIDE, wide)

    def scope_counts(self) -> dict[int, list[int]]:
        """The scope index (wide entries per scope) as stored in the kernel."""
        return {struct.unpack("=Q", k)[0]: keys.unpack_scope_counts(v)
                for k, v in self.scopes.items()}

    def net_counts(self) -> dict[tuple[int, int, str], list[int]]:
        """The net index as stored in the kernel: (scope, direction, coarse or fine net) ->
        entries per wildcard combination, then (coarse nets) the entries in its fine nets."""
        return {keys.unpack_net_key(k): keys.unpack_net_counts(v) for k, v in self.nets.items()}

    def wide_entries(self) -> int:
        """The node's count of wide entries (the datapath reads the scope index only then)."""
        return self.meta_get(keys.META_WIDE)

    # ---- rule names ------------------------------------------------------

    def rule_names(self) -> dict[int, str]:
        """rule id -> rule name."""
        return {struct.unpack("=I", k)[0]: keys.unpack_rule_name(v) for k, v in self.rules.items()}

    def rule_id(self, name: str) -> int:
        """The id of a rule name, allocating one if needed (safe against concurrent writers)."""
        if name in self._rule_ids:
            return self._rule_ids[name]
        names = self.rule_names()
        wanted = keys.unpack_rule_name(keys.pack_rule_name(name))
        for rid, existing in names.items():
            if existing == wanted:
                self._rule_ids[name] = rid
                return rid
        rid = max(names, default=0) + 1
        while True:
            try:
                self.rules.update(struct.pack("=I", rid), keys.pack_rule_name(name),
                                  bpfsys.BPF_NOEXIST)
                break
            except BPFSyscallError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                rid += 1
        self._rule_ids[name] = rid
        return rid

    # ---- safety list -----------------------------------------------------

    def safety(self) -> set[SafeKey]:
        """The safety list as installed."""
        return {SafeKey.unpack(k) for k in self.safe.keys()}

    def set_safety(self, wanted: Iterable[SafeKey]) -> None:
        """Make the installed safety list equal to `wanted` (adds first, then removes)."""
        want = set(wanted)
        have = self.safety()
        for k in want - have:
            self.safe.update(k.pack(), b"\x01")
        for k in have - want:
            self.safe.delete(k.pack())

    # ---- attachments -----------------------------------------------------

    def attach_records(self) -> dict[int, AttachRecord]:
        """slot -> attachment record."""
        return {struct.unpack("=I", k)[0]: AttachRecord.unpack(v) for k, v in self.attach.items()}

    def add_attach_record(self, rec: AttachRecord) -> None:
        """Remember an attachment (first free slot)."""
        recs = self.attach_records()
        for slot, existing in recs.items():
            if (existing.kind, existing.attach_type, existing.target) == (rec.kind, rec.attach_type, rec.target):
                self.attach.update(struct.pack("=I", slot), rec.pack())
                return
        slot = max(recs, default=0) + 1
        self.attach.update(struct.pack("=I", slot), rec.pack())

    def remove_attach_record(self, slot: int) -> None:
        """Forget an attachment."""
        self.attach.delete(struct.pack("=I", slot))

    # ---- meta and counters -----------------------------------------------

    def meta_get(self, index: int) -> int:
        """A u64 of the meta array (0 = source hash of the loaded programs)."""
        raw = self.meta.lookup(struct.pack("=I", index))
        return struct.unpack("=Q", raw[:8])[0] if raw else 0

    def meta_set(self, index: int, value: int) -> None:
        """Set a u64 of the meta array."""
        self.meta.update(struct.pack("=I", index), struct.pack("=Q", value & (2**64 - 1)))

    def counters(self) -> dict[str, int]:
        """Kernel counters summed over CPUs (verdicts_lost, denied, audited, safety_overrides)."""
        out: Counter[str] = Counter()
        for idx, name in STAT_NAMES.items():
            raw = self.stats_map.lookup(struct.pack("=I", idx))
            if raw:
                out[name] = sum(struct.unpack(f"={self._ncpu}Q", raw[: 8 * self._ncpu]))
            else:
                out[name] = 0
        return dict(out)


def _write_changed(table: bpfsys.PinnedMap, wanted: dict[bytes, bytes]) -> list[bytes]:
    """Write each key of `wanted` whose stored value differs; the keys the table holds that
    `wanted` has not (for the caller to delete once every table has its additions)."""
    current = dict(table.items())
    for raw, value in wanted.items():
        if current.get(raw) != value:
            table.update(raw, value)
    return [raw for raw in current if raw not in wanted]
