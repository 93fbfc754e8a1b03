"""Load, pin, attach, adopt and remove the enforcement BPF programs.

Persistence model (what survives the agent, including SIGKILL):
- maps are pinned under <base>/maps (BCC BPF_TABLE_PINNED creates or reuses them);
- programs are pinned under <base>/progs and attached to the cgroup with the
  legacy BPF_PROG_ATTACH (BPF_F_ALLOW_MULTI): the cgroup owns that attachment,
  so it outlives the process that made it;
- tc classifiers are attached over netlink (sensor.enforcement.tc, pyroute2) to
  the interface's clsact qdisc at priority TC_PREF: the qdisc owns the filter.
A restarted agent compiles the object again (to get the same pinned maps and
the verdict ring buffer), finds each pinned program, checks with
BPF_PROG_QUERY / the tc filter dump that it is still attached, and attaches only
what is missing. If the BPF source changed, it attaches the new program and
detaches the old one (never two copies). cleanup() removes everything.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sensor import kernel_headers
from sensor.bpf_program import bpf_source_dir
from sensor.enforcement import bpfsys, tc
from sensor.enforcement.errors import AttachError, BPFSyscallError, EnforcementError, InterfaceNotFoundError
from sensor.enforcement.keys import INDEX_LAYOUTS, META_SOURCE_HASH, AttachRecord
from sensor.enforcement.layout import CGROUP_PROGRAMS, HOOK_OF_ATTACH_TYPE, TC_PROGRAMS, PinLayout
from sensor.enforcement.maps import EnforcementMaps
from sensor.enforcement.verdicts import verdict_callback

log = logging.getLogger(__name__)

BPF_DIR = bpf_source_dir()
SOURCE = "enforce.c"
HEADER = "enforce.h"
TC_PREF = 49374          # our tc filter priority (0xC0DE)
TC_HANDLE = 1
TC_FILTER_NAME = "netvigil"  # what `tc filter show` prints before direct-action
KIND_CGROUP = 1
KIND_TC = 2


def source_hash(bpf_dir: Path = BPF_DIR) -> int:
    """64-bit hash of the BPF source (programs are replaced when it changes)."""
    h = hashlib.sha256()
    for name in (SOURCE, HEADER):
        h.update((bpf_dir / name).read_bytes())
    return int.from_bytes(h.digest()[:8], "little")


@dataclass
class InstallReport:
    """What install() did: attachments made, adopted, or replaced."""

    attached: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)


def _drop_stale_indexes(layout: PinLayout) -> list[str]:
    """Unpin the index maps (derived from the deny map) whose pinned layout is another
    netvigil version's, so the object creates them anew; returns their names. Programs
    still attached keep the old maps until they are replaced."""
    dropped = []
    for name, sizes in INDEX_LAYOUTS.items():
        path = layout.map_path(name)
        if not os.path.exists(path):
            continue
        m = bpfsys.PinnedMap.open(path)
        try:
            stale = (m.key_size, m.value_size) != sizes
        finally:
            m.close()
        if stale:
            os.unlink(path)
            dropped.append(name)
    return dropped


def _open_dir(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise AttachError(f"cannot open cgroup {path}: {exc}") from None


_TC_PROG_NAMES = {func[:15] for func in TC_PROGRAMS}   # kernel program names are 15 chars


def _prog_name(prog_id: int) -> str:
    try:
        fd = bpfsys.prog_get_fd_by_id(prog_id)
    except BPFSyscallError:
        return ""
    try:
        return bpfsys.prog_name(fd)
    except BPFSyscallError:
        return ""
    finally:
        os.close(fd)


def _our_tc_filter(dev: str, direction: str) -> tc.TcFilter | None:
    """The filter at our priority and handle on dev's hook, if it runs one of our programs.

    Raises AttachError when another tool's filter holds that place (we never replace it).
    """
    for f in tc.filters(dev, direction):
        if (f.prio, f.handle) != (TC_PREF, TC_HANDLE):
            continue
        if f.kind == "bpf" and _prog_name(f.prog_id) in _TC_PROG_NAMES:
            return f
        raise AttachError(f"tc {direction} priority {TC_PREF} handle {TC_HANDLE:#x} on {dev} is "
                          f"taken by another filter ({f.kind} {f.name or f.prog_id}): not replacing it")
    return None


class EnforcementDatapath:
    """The enforcement BPF object of one agent: maps, programs, verdict stream."""

    def __init__(self, layout: PinLayout | None = None, bpf_dir: Path = BPF_DIR) -> None:
        self.layout = layout or PinLayout()
        self.bpf_dir = bpf_dir
        self._bpf = None
        self.maps: EnforcementMaps | None = None
        self._verdicts_open = False

    # ---- load ------------------------------------------------------------

    def load(self) -> EnforcementMaps:
        """Compile the object with pinned maps (creating or reusing them); no attachment."""
        if self._bpf is not None:
            assert self.maps is not None
            return self.maps
        try:
            from bcc import BPF  # noqa: PLC0415 (optional dependency, import on use)
        except ImportError as exc:
            raise EnforcementError(f"BCC (python3-bpfcc) is not importable: {exc}") from None
        kernel_headers.use()
        os.makedirs(self.layout.maps_dir, exist_ok=True)
        os.makedirs(self.layout.progs_dir, exist_ok=True)
        dropped = _drop_stale_indexes(self.layout)
        cflags = [f"-I{self.bpf_dir}", f'-DNV_PIN_MAPS="{self.layout.maps_dir}"', "-w"]
        try:
            self._bpf = BPF(src_file=str(self.bpf_dir / SOURCE).encode(), cflags=cflags)
        except Exception as exc:  # BCC raises bare Exception on compile/load errors
            raise EnforcementError(f"cannot load {self.bpf_dir / SOURCE}: {exc}") from None
        self.maps = EnforcementMaps(self.layout)
        if dropped:
            log.info("enforcement index maps %s had another layout: rebuilt", ", ".join(dropped))
            self.maps.rebuild_scopes()
        return self.maps

    def _load_prog(self, func: str, cgroup_attach_type: int | None) -> int:
        from bcc import BPF  # noqa: PLC0415

        assert self._bpf is not None
        try:
            if cgroup_attach_type is None:
                fn = self._bpf.load_func(func.encode(), BPF.SCHED_CLS)
            else:
                fn = self._bpf.load_func(func.encode(), BPF.CGROUP_SOCK_ADDR,
                                         attach_type=cgroup_attach_type)
        except Exception as exc:  # BCC raises bare Exception
            raise EnforcementError(f"cannot load program {func}: {exc}") from None
        return fn.fd

    def _pinned_or_new_prog(self, func: str, pin_name: str, attach_type: int | None,
                            fresh: bool) -> tuple[int, bool]:
        """(prog fd we own, True if newly loaded). Re-pins when `fresh`."""
        pin = self.layout.prog_path(pin_name)
        if os.path.exists(pin) and not fresh:
            return bpfsys.obj_get(pin), False
        fd = os.dup(self._load_prog(func, attach_type))
        if os.path.exists(pin):
            os.unlink(pin)  # an attached old program stays alive through its attachment
        bpfsys.obj_pin(fd, pin)
        return fd, True

    # ---- attach / adopt --------------------------------------------------

    def install(self, cgroup: str | Path | None, interfaces: Sequence[str] = ()) -> InstallReport:
        """Attach (or adopt) the sock_addr programs on `cgroup` and tc on `interfaces`."""
        maps = self.load()
        report = InstallReport()
        want_hash = source_hash(self.bpf_dir)
        fresh = maps.meta_get(META_SOURCE_HASH) not in (0, want_hash)
        if fresh:
            log.info("enforcement programs changed since they were pinned: replacing them")
            maps.rebuild_scopes()   # an index the new programs read may be new or changed
        old_ids: dict[str, int] = {}
        for func, (pin_name, _) in {**CGROUP_PROGRAMS, **TC_PROGRAMS}.items():
            pin = self.layout.prog_path(pin_name)
            if os.path.exists(pin):
                fd = bpfsys.obj_get(pin)
                old_ids[func] = bpfsys.prog_id(fd)
                os.close(fd)
        if cgroup is not None:
            cg = str(cgroup)
            cg_fd = _open_dir(cg)
            try:
                for func, (pin_name, at) in CGROUP_PROGRAMS.items():
                    self._install_cgroup(func, pin_name, at, cg, cg_fd, fresh, old_ids, report)
            finally:
                os.close(cg_fd)
        for dev in interfaces:
            for func, (pin_name, direction) in TC_PROGRAMS.items():
                self._install_tc(func, pin_name, direction, dev, fresh, old_ids, report)
        maps.meta_set(META_SOURCE_HASH, want_hash)
        return report

    def _install_cgroup(self, func: str, pin_name: str, at: int, cg: str, cg_fd: int,
                        fresh: bool, old_ids: dict[str, int], report: InstallReport) -> None:
        assert self.maps is not None
        attached = bpfsys.prog_query(cg_fd, at)
        ours = old_ids.get(func)
        if not fresh and ours is not None and ours in attached:
            report.adopted.append(f"{pin_name}@{cg}")
            self.maps.add_attach_record(AttachRecord(KIND_CGROUP, at, ours, 0, cg))
            return
        fd, _new = self._pinned_or_new_prog(func, pin_name, at, fresh or ours is None)
        try:
            new_id = bpfsys.prog_id(fd)
            # record first: a crash right after attaching must still be cleanable
            self.maps.add_attach_record(AttachRecord(KIND_CGROUP, at, new_id, 0, cg))
            if new_id not in attached:
                bpfsys.prog_attach(fd, cg_fd, at)
            # detach stale copies of this program (older source, lost pins)
            stale = [pid for pid in attached if pid != new_id and _prog_name(pid) == func[:15]]
            for pid in stale:
                old_fd = bpfsys.prog_get_fd_by_id(pid)
                try:
                    bpfsys.prog_detach(old_fd, cg_fd, at)
                finally:
                    os.close(old_fd)
            (report.replaced if stale else report.attached).append(f"{pin_name}@{cg}")
        finally:
            os.close(fd)

    def _install_tc(self, func: str, pin_name: str, direction: str, dev: str, fresh: bool,
                    old_ids: dict[str, int], report: InstallReport) -> None:
        assert self.maps is not None
        we_created = tc.ensure_clsact(dev)
        prev = [r for r in self.maps.attach_records().values()
                if r.kind == KIND_TC and r.target == dev]
        if prev and any(r.flags & 1 for r in prev):
            we_created = True
        current = _our_tc_filter(dev, direction)
        ours = old_ids.get(func)
        at = 0 if direction == "ingress" else 1
        if not fresh and ours is not None and current is not None and current.prog_id == ours:
            report.adopted.append(f"{pin_name}@{dev}")
            self.maps.add_attach_record(AttachRecord(KIND_TC, at, ours, int(we_created), dev))
            return
        fd, _new = self._pinned_or_new_prog(func, pin_name, None, fresh or ours is None)
        try:
            new_id = bpfsys.prog_id(fd)
            # record first: a crash right after attaching must still be cleanable
            self.maps.add_attach_record(AttachRecord(KIND_TC, at, new_id, int(we_created), dev))
            tc.replace_filter(dev, direction, TC_PREF, TC_HANDLE, fd, TC_FILTER_NAME)
        finally:
            os.close(fd)
        (report.replaced if current is not None else report.attached).append(f"{pin_name}@{dev}")

    # ---- verdicts --------------------------------------------------------

    def open_verdicts(self, callback: Callable[[dict], None]) -> None:
        """Deliver every verdict as a flat event dict to `callback` (from poll())."""
        maps = self.load()
        names: dict[int, str] = {}

        def rule_name(rid: int) -> str:
            if rid not in names:
                names.update(maps.rule_names())
            return names.get(rid, f"rule#{rid}")

        assert self._bpf is not None
        self._bpf[b"nv_verdicts"].open_ring_buffer(verdict_callback(callback, rule_name))
        self._verdicts_open = True

    def poll(self, timeout_ms: int = 0) -> None:
        """Consume pending verdicts (waits up to timeout_ms; -1 = forever)."""
        if not self._verdicts_open or self._bpf is None:
            raise EnforcementError("open_verdicts() was not called")
        self._bpf.ring_buffer_poll(timeout_ms)

    def counters(self) -> dict[str, int]:
        """Kernel counters (denied, audited, safety_overrides, verdicts_lost)."""
        return self.load().counters()

    def close(self) -> None:
        """Release this process's handles. Attachments and pins stay (enforcement persists)."""
        if self.maps is not None:
            self.maps.close()
            self.maps = None
        if self._bpf is not None:
            try:
                self._bpf.cleanup()
            except Exception:  # noqa: BLE001 (BCC cleanup is best effort)
                pass
            self._bpf = None
        self._verdicts_open = False

    def cleanup(self) -> list[str]:
        """Detach every program, remove every pin: nothing of enforcement is left."""
        self.close()
        return remove_all(self.layout)


def remove_all(layout: PinLayout) -> list[str]:
    """Detach and unpin everything recorded under `layout` (usable without compiling)."""
    done: list[str] = []
    errors: list[str] = []
    if layout.base.exists():
        records = {}
        attach_pin = layout.map_path("attach")
        if os.path.exists(attach_pin):
            try:
                with bpfsys.PinnedMap.open(attach_pin) as attach:
                    records = {i: AttachRecord.unpack(v) for i, (_, v) in enumerate(attach.items())}
            except EnforcementError as exc:
                errors.append(str(exc))
        prog_fds: dict[str, int] = {}
        for func, (pin_name, _) in {**CGROUP_PROGRAMS, **TC_PROGRAMS}.items():
            pin = layout.prog_path(pin_name)
            if os.path.exists(pin):
                prog_fds[func] = bpfsys.obj_get(pin)
        try:
            for rec in records.values():
                try:
                    if rec.kind == KIND_CGROUP:
                        _detach_cgroup(rec)
                        hook = HOOK_OF_ATTACH_TYPE.get(rec.attach_type, str(rec.attach_type))
                        done.append(f"detached {hook} from {rec.target}")
                    elif rec.kind == KIND_TC:
                        done.extend(_detach_tc(rec))
                except EnforcementError as exc:
                    errors.append(str(exc))
        finally:
            for fd in prog_fds.values():
                os.close(fd)
    if layout.base.exists():
        shutil.rmtree(layout.base, ignore_errors=True)
        done.append(f"removed {layout.base}")
    if layout.base.exists():
        errors.append(f"could not remove {layout.base}")
    if errors:
        raise EnforcementError("cleanup incomplete: " + "; ".join(errors))
    return done


def _detach_tc(rec: AttachRecord) -> list[str]:
    """Remove our filter from the recorded hook, and the clsact qdisc if we added it and
    nothing else uses it. Other tools' filters and qdiscs stay."""
    direction = "ingress" if rec.attach_type == 0 else "egress"
    done = []
    try:
        for f in tc.filters(rec.target, direction):
            if (f.prio, f.handle) == (TC_PREF, TC_HANDLE) and f.kind == "bpf" and (
                    f.prog_id == rec.prog_id or _prog_name(f.prog_id) in _TC_PROG_NAMES):
                tc.delete_filter(rec.target, direction, TC_PREF, TC_HANDLE)
                done.append(f"removed tc {direction} filter from {rec.target}")
        if rec.flags & 1 and tc.delete_clsact_if_unused(rec.target):
            done.append(f"removed clsact qdisc from {rec.target}")
    except InterfaceNotFoundError:
        pass  # interface gone: its qdisc and filters went with it
    return done


def _detach_cgroup(rec: AttachRecord) -> None:
    if not os.path.isdir(rec.target):
        return  # cgroup gone: its attachments went with it
    cg_fd = _open_dir(rec.target)
    try:
        for pid in bpfsys.prog_query(cg_fd, rec.attach_type):
            if pid != rec.prog_id and _prog_name(pid) not in {f[:15] for f in CGROUP_PROGRAMS}:
                continue
            try:
                fd = bpfsys.prog_get_fd_by_id(pid)
            except BPFSyscallError:
                continue
            try:
                bpfsys.prog_detach(fd, cg_fd, rec.attach_type)
            except BPFSyscallError as exc:
                raise AttachError(f"cannot detach program {pid} from {rec.target}: {exc}") from None
            finally:
                os.close(fd)
    finally:
        os.close(cg_fd)
