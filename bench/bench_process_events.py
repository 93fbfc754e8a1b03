"""Process-event benchmark: the agent's userspace cost of one fork, exec and exit.

A build (`make -j2`, bench_workloads' exec storm) is a stream of fork/exec/exit records,
and every microsecond the agent spends on one is taken from the build. This feeds
records packed as bpf/sensor.h lays them out (sensor/bpf_layout.py) into the live
agent's own parts, wired as `netvigil run` wires them (no BPF loaded): `Sensor`'s
decoder, process table, /proc loader and container identity, the k8s enricher on
runtime metadata, and a `Pipeline` with the shipped rules and the event hub. Each
cycle is fork (this process forks a child), exec of the child (a compiler-like argv)
and its exit; the children are real, live processes (sleepers started here), so the
/proc reads the agent makes for them are real reads.

Prints microseconds per event by kind and per cycle, best of interleaved rounds (this
VM drifts), for the decoder alone and for decoder + pipeline. Figures only.

Run: .venv/bin/python bench/bench_process_events.py [--cycles N] [--rounds N]   (as root
or not: nothing is loaded into the kernel)
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rules import DEFAULT_RULES_DIR  # noqa: E402
from rules.loader import load_rules  # noqa: E402
from sensor import cgroups  # noqa: E402
from sensor.agent import Sensor  # noqa: E402
from sensor.bpf_layout import KINDS  # noqa: E402
from sensor.decoding import EXEC_FIXED as EXEC, EXIT, FORK  # noqa: E402
from sensor.event_hub import EventHub  # noqa: E402
from sensor.k8s.enrich import K8sEnricher  # noqa: E402
from sensor.k8s.runtime import RuntimeMetadata  # noqa: E402
from sensor.k8s.config import K8sConfig  # noqa: E402
from sensor.pipeline import Pipeline  # noqa: E402

ARGV = ["/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "-quiet", "-imultiarch", "x86_64-linux-gnu", "u17.c",
        "-quiet", "-dumpdir", "u17.", "-dumpbase", "u17.c", "-dumpbase-ext", ".c", "-mtune=generic",
        "-march=x86-64", "-O0", "-fasynchronous-unwind-tables", "-o", "/tmp/ccXyZ.s"]


def fork_record(ts: int, cgid: int, parent: int, child: int) -> bytes:
    return FORK.pack(ts, cgid, KINDS["NV_FORK"], parent, parent, 0, 0, 0, b"make", child, 0)


def exec_record(ts: int, cgid: int, pid: int, argv: list[str]) -> bytes:
    args = b"".join(a.encode() + b"\0" for a in argv)
    path = argv[0].encode()
    return EXEC.pack(ts, cgid, KINDS["NV_EXEC"], pid, pid, 0, 0, 0, b"cc1", pid, len(path), len(args),
                     len(argv), 0, path) + args


def exit_record(ts: int, cgid: int, pid: int) -> bytes:
    return EXIT.pack(ts, cgid, KINDS["NV_EXIT"], pid, pid, 0, 0, 0, b"cc1", 0, 0)


def records(cycles: int, children: list[int], cgid: int, ts0: int) -> list[tuple[str, bytes]]:
    """fork, exec, exit of `cycles` children (cycling over the live pids)."""
    me, out, ts = os.getpid(), [], ts0
    for i in range(cycles):
        child = children[i % len(children)]
        out += [("fork", fork_record(ts, cgid, me, child)), ("exec", exec_record(ts + 1000, cgid, child, ARGV)),
                ("exit", exit_record(ts + 2000, cgid, child))]
        ts += 10_000
    return out


def agent_parts(with_pipeline: bool) -> tuple[Sensor, Callable[[dict[str, Any]], None], EventHub]:
    """The decoder chain of `netvigil run` (runtime metadata, no API), consumer included."""
    hub = EventHub()
    enricher = K8sEnricher(RuntimeMetadata(K8sConfig().runtime_roots()))
    if with_pipeline:
        ruleset = load_rules([str(DEFAULT_RULES_DIR)])
        consumer: Callable[[dict[str, Any]], None] = Pipeline(
            hostname=socket.gethostname(), ruleset=ruleset, k8s=enricher, on_event=hub.publish)
    else:
        consumer = hub.publish
    return Sensor(consumer, enricher=enricher), consumer, hub


def run_round(sensor: Sensor, consumer: Callable[[dict[str, Any]], None], hub: EventHub,
              recs: list[tuple[str, bytes]]) -> dict[str, float]:
    """Seconds per kind over recs, decoded and handed to the consumer."""
    spent = {"fork": 0.0, "exec": 0.0, "exit": 0.0}
    decode, clock = sensor.decoder.decode, time.perf_counter
    for kind, raw in recs:
        t0 = clock()
        ev = decode(raw)
        if ev is not None:
            consumer(ev)
        spent[kind] += clock() - t0
    hub.flush()
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=3000, help="fork+exec+exit cycles per round (default 3000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the best is reported (default 5)")
    args = ap.parse_args()
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(8)]
    try:
        children = [p.pid for p in sleepers]
        mount = cgroups.find_mount()
        cgid = cgroups.pid_cgroup_id(os.getpid(), mount)
        setups = {"decoder only": agent_parts(False), "decoder + pipeline (shipped rules)": agent_parts(True)}
        best: dict[str, dict[str, float]] = {}
        ts = time.monotonic_ns()
        for _ in range(args.rounds):
            for name, (sensor, consumer, hub) in setups.items():  # interleaved
                recs = records(args.cycles, children, cgid, ts)
                ts += args.cycles * 10_000 + 1
                spent = run_round(sensor, consumer, hub, recs)
                mine = best.setdefault(name, {})
                for kind, s in spent.items():
                    mine[kind] = min(mine.get(kind, s), s)
        print(f"process events: {args.cycles} fork+exec+exit cycles per round, best of {args.rounds} rounds")
        for name, spent in best.items():
            per = {k: 1e6 * s / args.cycles for k, s in spent.items()}
            total = sum(per.values())
            print(f"  {name}: fork {per['fork']:.1f} us, exec {per['exec']:.1f} us, exit {per['exit']:.1f} us;"
                  f" {total / 3:.1f} us per event, {total:.1f} us per cycle")
    finally:
        for p in sleepers:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
