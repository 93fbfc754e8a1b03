"""CLOCK_BOOTTIME, the clock of BPF timestamps (bpf_ktime_get_boot_ns) and deny-entry expiry."""
from __future__ import annotations

import os
import time

import psutil

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def boot_ns() -> int:
    """CLOCK_BOOTTIME now, in ns."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def boot_to_wall_offset_ns() -> int:
    """ns to add to a CLOCK_BOOTTIME stamp to get ns since the Unix epoch."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def process_start_boot_ns(create_time: float) -> int:
    """CLOCK_BOOTTIME ns at which a process started, from psutil's `create_time()`.

    psutil gives wall seconds: the kernel's start in clock ticks / CLK_TCK plus the
    whole-second boot time of /proc/stat. Subtracting that boot time gives the ticks back
    exactly, so one process always gets the same stamp (and so the same exec_id).
    """
    ticks = round((create_time - psutil.boot_time()) * _CLK_TCK)
    return ticks * 1_000_000_000 // _CLK_TCK
