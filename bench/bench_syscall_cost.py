"""What the agent adds to a syscall it does not hook, per network hook set (prints figures).

Once any syscall tracepoint is enabled, every syscall of every process on the node takes
the kernel's tracing slow path. This times a C loop of `getppid()` (a syscall no hook
set hooks) pinned to CPU 1, in interleaved rounds: without the agent, and with
`netvigil run` on each hook set (`sensor.hooks: syscalls`, `cgroup`); each round's
figure is the median of several loops, and the report the median over rounds.

Run: .venv/bin/python bench/bench_syscall_cost.py [--rounds N] [--calls N]
(as root; needs a C compiler, which scripts/bootstrap.sh installs)
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_workloads import HOOK_SETS, Agent  # noqa: E402

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""


def build_loop(workdir: Path) -> Path:
    """Compile the getppid loop; its path."""
    src, exe = workdir / "loop.c", workdir / "loop"
    src.write_text(LOOP_C)
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def ns_per_call(loop: Path, calls: int, repeats: int) -> float:
    """Median ns per getppid() over `repeats` loops on CPU 1."""
    runs = [float(subprocess.run(["taskset", "-c", "1", str(loop), str(calls)], check=True,
                                 capture_output=True, text=True).stdout) for _ in range(repeats)]
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--calls", type=int, default=2_000_000, help="getppid() calls per loop")
    ap.add_argument("--quick", action="store_true", help="one short round (smoke test)")
    args = ap.parse_args()
    if not shutil.which("cc") or not shutil.which("taskset"):
        sys.exit("bench_syscall_cost: needs cc and taskset (run scripts/bootstrap.sh)")
    rounds, calls, repeats = (1, 200_000, 3) if args.quick else (args.rounds, args.calls, 7)
    print("netvigil syscall cost benchmark" + (" (quick)" if args.quick else ""))
    figures: dict[str, list[float]] = {"without": [], **{h: [] for h in HOOK_SETS}}
    with tempfile.TemporaryDirectory(prefix="nv-bench-") as tmp:
        workdir = Path(tmp)
        loop = build_loop(workdir)
        for _ in range(rounds):
            figures["without"].append(ns_per_call(loop, calls, repeats))
            for hooks in HOOK_SETS:
                with Agent(hooks, workdir) as agent:
                    figures[hooks].append(ns_per_call(loop, calls, repeats))
                    agent.stop()
    base = statistics.median(figures["without"])
    print(f"getppid(), not hooked by any set: {base:.1f} ns per call without the agent "
          f"({rounds} rounds, medians; rounds: " + ", ".join(f"{v:.0f}" for v in figures["without"]) + ")")
    for hooks in HOOK_SETS:
        with_agent = statistics.median(figures[hooks])
        print(f"  sensor.hooks {hooks}: {with_agent:.1f} ns per call, {with_agent - base:+.1f} ns "
              f"({with_agent / base:.3f} of the time without); rounds: "
              + ", ".join(f"{v:.0f}" for v in figures[hooks]))


if __name__ == "__main__":
    main()
