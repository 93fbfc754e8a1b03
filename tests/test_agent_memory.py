"""The agent hands memory that compiling freed back to the kernel (sensor.bpf_program)."""
from __future__ import annotations

import subprocess
import sys

# In a child, so the test process's own heap is left alone: fill the malloc heap with
# blocks (below glibc's mmap threshold, so they come from the heap), free all but the
# last (which pins the heap's top, as the agent's live objects do), then trim.
CHILD = """
import ctypes
from sensor.bpf_program import release_free_heap
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)

def rss_kb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))

blocks = [libc.malloc(32 << 10) for _ in range(3000)]
for b in blocks:
    ctypes.memset(b, 1, 32 << 10)
for b in blocks[:-1]:
    libc.free(b)
before = rss_kb()
trimmed = release_free_heap()
print(trimmed, before, rss_kb())
"""


def test_freed_heap_pages_leave_the_resident_set() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    trimmed, before, after = out.stdout.split()
    assert trimmed == "True"                      # glibc: malloc_trim is there
    assert int(before) - int(after) >= 60 << 10   # of the ~94 MB freed, most leaves RSS
