"""CLOCK_BOOTTIME, the clock of BPF timestamps (bpf_ktime_get_boot_ns) and deny-entry expiry."""
from __future__ import annotations

import time


def boot_ns() -> int:
    """CLOCK_BOOTTIME now, in ns."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def boot_to_wall_offset_ns() -> int:
    """ns to add to a CLOCK_BOOTTIME stamp to get ns since the Unix epoch."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
