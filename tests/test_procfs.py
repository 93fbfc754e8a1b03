"""Seeding the process table from the host's live processes, and the agent's own CPU/RSS."""
from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import psutil
import pytest

from sensor.boottime import boot_to_wall_offset_ns
from sensor.procfs import ProcReader, process_usage, read_boot_id

SLEEPER = "import sys, time; print('up', flush=True); time.sleep(60)"


@pytest.fixture
def reader() -> ProcReader:
    return ProcReader(read_boot_id(), boot_to_wall_offset_ns())


@pytest.fixture
def long_named(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, int]]:
    """A python started through a 24-character name, with a non-UTF-8 argument."""
    exe = tmp_path / "a-very-long-program-name"
    exe.symlink_to(sys.executable)
    t0 = time.time_ns()
    proc = subprocess.Popen([str(exe), "-c", SLEEPER, b"\xff-arg"], stdout=subprocess.PIPE)
    t1 = time.time_ns()
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    try:
        yield proc, t0, t1
    finally:
        proc.kill()
        proc.wait()


def test_a_seeded_process_carries_the_fields_an_exec_event_would(
        reader: ProcReader, long_named: tuple[subprocess.Popen, int, int]) -> None:
    proc, t0, t1 = long_named
    rec = reader.read(proc.pid)
    assert rec is not None
    assert rec.name == "a-very-long-pro"          # the kernel's 15-character comm
    assert rec.exe.endswith("/a-very-long-program-name")
    assert rec.args == ["-c", SLEEPER, "\ufffd-arg"]
    assert rec.exepath == os.path.realpath(sys.executable)
    assert (rec.ppid, rec.uid, rec.gid) == (os.getpid(), os.getuid(), os.getgid())
    assert rec.meta["user.name"] == pwd.getpwuid(os.getuid()).pw_name
    # wall-clock ns of the fork, at clock-tick (10 ms) precision
    assert t0 - 50_000_000 <= rec.start_ns <= t1 + 50_000_000
    again = reader.read(proc.pid)
    assert again is not None and again.exec_id == rec.exec_id and again.start_ns == rec.start_ns
    msgpack.packb(rec.to_dict())  # what the recorder writes: no undecodable text left


def test_snapshot_links_parents_and_orders_them_first(
        reader: ProcReader, long_named: tuple[subprocess.Popen, int, int]) -> None:
    proc = long_named[0]
    snap = reader.snapshot()
    pos = {r.pid: i for i, r in enumerate(snap)}
    child, me = snap[pos[proc.pid]], snap[pos[os.getpid()]]
    assert child.parent_exec_id == me.exec_id and pos[os.getpid()] < pos[proc.pid]
    kthreadd = [r for r in snap if r.pid == 2]
    assert not kthreadd or kthreadd[0].args == [] and kthreadd[0].exe == kthreadd[0].name


def test_vanished_and_zombie_processes_do_not_break_seeding(reader: ProcReader) -> None:
    gone = subprocess.Popen(["sleep", "30"])
    gone.kill()
    gone.wait()
    assert reader.read(gone.pid) is None
    zombie = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        rec = reader.read(zombie.pid)
        assert rec is not None and rec.name == "true" and rec.args == [] and rec.ppid == os.getpid()
        # a pid that vanishes between the listing and the read is skipped
        reader.pids = lambda: iter([gone.pid, zombie.pid, os.getpid()])  # type: ignore[method-assign]
        assert [r.pid for r in reader.snapshot()] == [os.getpid(), zombie.pid]
    finally:
        zombie.wait()


def test_process_usage_counts_cpu_spent_and_resident_memory() -> None:
    before = process_usage()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    block = bytearray(64 << 20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    after = process_usage()
    assert after.cpu_s - before.cpu_s >= 0.25
    assert after.rss_bytes - before.rss_bytes >= 60 << 20
    assert after.threads >= 1
    del block
    with pytest.raises(psutil.NoSuchProcess):
        gone = subprocess.Popen(["true"])
        gone.wait()
        process_usage(gone.pid)
