"""The hook floor: empty BPF programs on every hook the sensor attaches to.

What attaching anything to those hooks costs a workload before our programs do any
work. Shared by the benchmarks that report a ratio to the floor. The hooks are those of
the network hook set `netvigil run` chooses here (its default sensor.hooks): tracepoints, and
for the cgroup set the cgroup programs (returning "allow") linked to the cgroup2 root and
the packet_create fentry where the kernel allows it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from sensor import cgroups
from sensor.bpf_program import (
    CGROUP_PROGRAMS, DEFAULT_HOOKS, PACKET_KFUNC, attach_cgroup_programs, bpf_source_dir, choose_hooks, fentry_allowed,
    kernel_has_btf, kernel_offsets, load_bcc, sensor_sources)

_PROBE = re.compile(r"\b(RAW_TRACEPOINT_PROBE|TRACEPOINT_PROBE)\((\w+)(?:, (\w+))?\)")
_CTX = {"CGROUP_SOCK_ADDR": "struct bpf_sock_addr", "CGROUP_SOCK": "struct bpf_sock"}


def chosen_hooks() -> str:
    """The network hook set `netvigil run` attaches on this machine (default sensor.hooks)."""
    return choose_hooks(DEFAULT_HOOKS, kernel_offsets(kernel_has_btf()), cgroups.find_mount()).hooks


def sensor_hooks(src_dir: Path | None = None, hooks: str | None = None) -> list[tuple[str, str, str | None]]:
    """(macro, category or raw tracepoint name, event name) of every tracepoint probe the
    sensor attaches on this kernel."""
    found: set[tuple[str, str, str | None]] = set()
    for name in sensor_sources(kernel_offsets(kernel_has_btf()), hooks or chosen_hooks()):
        found.update(_PROBE.findall(((src_dir or bpf_source_dir()) / name).read_text()))
    return sorted(found, key=lambda h: (h[0], h[1], h[2] or ""))


def empty_program_text(hooks: list[tuple[str, str, str | None]], cgroup: bool = False,
                       packet_kfunc: bool = False) -> str:
    """BPF C with one program that returns 0 on each hook (and "allow" on each cgroup hook)."""
    lines = []
    for macro, first, second in hooks:
        args = f"{first}, {second}" if second else first
        lines.append(f"{macro}({args}) {{ return 0; }}")
    if cgroup:
        lines += [f"int {func}({_CTX[ptype]} *ctx) {{ return 1; }}" for func, (ptype, _) in CGROUP_PROGRAMS.items()]
    if packet_kfunc:
        lines.append(f"KFUNC_PROBE({PACKET_KFUNC}) {{ return 0; }}")
    return "\n".join(lines) + "\n"


class Floor:
    """The loaded empty programs; `cleanup()` detaches them all."""

    def __init__(self, hooks: str | None = None) -> None:
        bpf_cls = load_bcc()
        hooks = hooks or chosen_hooks()
        cgroup = hooks == "cgroup"
        packet = cgroup and fentry_allowed(bpf_cls, PACKET_KFUNC)
        self.bpf = bpf_cls(text=empty_program_text(sensor_hooks(hooks=hooks), cgroup, packet).encode())
        root = cgroups.find_mount()
        self.links = attach_cgroup_programs(self.bpf, bpf_cls, root) if cgroup and root else []

    def cleanup(self) -> None:
        for fd in self.links:
            os.close(fd)
        self.links = []
        self.bpf.cleanup()


def load_floor(hooks: str | None = None) -> Floor:
    """Load and attach the empty programs of a hook set ("syscalls" or "cgroup"; default:
    the one `netvigil run` picks); the caller calls `.cleanup()` on the result."""
    return Floor(hooks)
