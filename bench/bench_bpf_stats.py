"""Where the sensor's kernel-side time goes: per-program run counts and run time.

Loads the sensor (sensor.hooks as given, default auto), enables the kernel's BPF run-time
statistics (`kernel.bpf_stats_enabled=1`, restored after), runs the workloads of
bench_workloads.py (nginx + wrk keep-alive and `Connection: close`, a `make -j2` build),
and prints for each program the calls, total and mean run time, and the share of
all the sensor's kernel time, per workload. Read through BPF_OBJ_GET_INFO_BY_FD
(`run_time_ns`, `run_cnt` of struct bpf_prog_info): what `bpftool prog show` prints.

Run: .venv/bin/python bench/bench_bpf_stats.py [--hooks auto|cgroup|syscalls] [--seconds S]
(as root; needs nginx-light, wrk and gcc, which scripts/bootstrap.sh installs)
"""
from __future__ import annotations

import argparse
import ctypes
import struct
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_workloads import build_rate, make_project, nginx, wrk_rate  # noqa: E402

from sensor.bpf_program import SensorProgram  # noqa: E402
from sensor.enforcement import bpfsys  # noqa: E402

STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
_INFO_SIZE = 256
_RUN_TIME_AT, _NAME_AT = 192, 64   # struct bpf_prog_info: run_time_ns, run_cnt; name[16]


def prog_stats(fd: int) -> tuple[str, int, int]:
    """(name, run_time_ns, run_cnt) of the program behind fd."""
    info = ctypes.create_string_buffer(_INFO_SIZE)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("=IIQ", attr, 0, fd, _INFO_SIZE, ctypes.addressof(info))
    bpfsys._call(bpfsys.BPF_OBJ_GET_INFO_BY_FD, attr, "program info")
    name = info.raw[_NAME_AT:_NAME_AT + 16].split(b"\0", 1)[0].decode()
    run_ns, runs = struct.unpack_from("=QQ", info.raw, _RUN_TIME_AT)
    return name, run_ns, runs


def snapshot(program: SensorProgram) -> dict[str, tuple[int, int]]:
    """name -> (run_time_ns, run_cnt) of every loaded program of the sensor."""
    out = {}
    for fn in program.bpf.funcs.values():
        name, ns, runs = prog_stats(fn.fd)
        out[name] = (ns, runs)
    return out


def drain(program: SensorProgram, stop: threading.Event) -> None:
    while not stop.is_set():
        program.poll(50)


def run(program: SensorProgram, label: str, work) -> None:
    before = snapshot(program)
    done = work()
    after = snapshot(program)
    rows = []
    for name, (ns, runs) in after.items():
        d_ns, d_runs = ns - before.get(name, (0, 0))[0], runs - before.get(name, (0, 0))[1]
        if d_runs:
            rows.append((d_ns, d_runs, name))
    total = sum(r[0] for r in rows) or 1
    print(f"{label}: {done}; sensor programs ran {total / 1e6:,.1f} ms in the kernel")
    for d_ns, d_runs, name in sorted(rows, reverse=True):
        print(f"  {name:<16} {d_runs:>10,} runs  {d_ns / 1e6:>9,.1f} ms  {d_ns / d_runs:>7,.0f} ns/run"
              f"  {100 * d_ns / total:5.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hooks", default="auto", choices=("auto", "cgroup", "syscalls"))
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    old = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    program = SensorProgram(None, hooks=args.hooks)
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(program, stop), daemon=True)
    reader.start()
    try:
        print(f"netvigil kernel-side time (bpf_stats), hooks: {program.hooks.hooks}")
        with tempfile.TemporaryDirectory(prefix="nv-bpfstats-") as tmp:
            workdir = Path(tmp)
            with nginx(workdir) as (port, pid):
                for label, close in (("keep-alive HTTP", False), ("connection churn", True)):
                    run(program, label, lambda c=close: f"{wrk_rate(port, pid, args.seconds, c)[0]:,.0f} requests/s")
            proj = make_project(workdir, 300)
            build_rate(proj)
            run(program, "exec storm (make -j2, 300 files)", lambda: f"{build_rate(proj)[0]:.3f} builds/s")
        print(f"lost events: {program.lost_events()}")
    finally:
        stop.set()
        reader.join()
        program.close()
        STATS_SYSCTL.write_text(old)


if __name__ == "__main__":
    main()
