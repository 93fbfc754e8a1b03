"""The hook floor: empty BPF programs on every tracepoint the sensor attaches to.

What attaching anything to those hooks costs a workload before our programs do any
work. Shared by the benchmarks that report a ratio to the floor.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sensor.bpf_program import bpf_source_dir, kernel_has_btf, kernel_offsets, load_bcc, sensor_sources

_PROBE = re.compile(r"\b(RAW_TRACEPOINT_PROBE|TRACEPOINT_PROBE)\((\w+)(?:, (\w+))?\)")


def sensor_hooks(src_dir: Path | None = None) -> list[tuple[str, str, str | None]]:
    """(macro, category or raw tracepoint name, event name) of every probe the sensor
    attaches on this kernel."""
    hooks: set[tuple[str, str, str | None]] = set()
    for name in sensor_sources(kernel_offsets(kernel_has_btf())):
        hooks.update(_PROBE.findall(((src_dir or bpf_source_dir()) / name).read_text()))
    return sorted(hooks, key=lambda h: (h[0], h[1], h[2] or ""))


def empty_program_text(hooks: list[tuple[str, str, str | None]]) -> str:
    """BPF C with one program that returns 0 on each hook."""
    lines = []
    for macro, first, second in hooks:
        args = f"{first}, {second}" if second else first
        lines.append(f"{macro}({args}) {{ return 0; }}")
    return "\n".join(lines) + "\n"


def load_floor() -> Any:
    """Load and attach the empty programs; the caller calls `.cleanup()` on the result."""
    return load_bcc()(text=empty_program_text(sensor_hooks()).encode())
