"""Workload benchmark on third-party programs: what the agent costs the node's workloads.

Three workloads, each in interleaved rounds (without the agent; then for each network
hook set, `sensor.hooks: syscalls` and `cgroup`, with empty programs on that set's hooks
= its hook floor, and with `netvigil run` on it; every other round in reverse order, as
this VM's speed drifts for seconds at a time), rates as medians over the rounds and
ratios as medians of each round's own ratio:

- keep-alive HTTP: nginx serving a small static file to wrk on loopback, requests/s
  (nginx pinned to CPU 0, wrk to CPU 1);
- connection churn: the same with `Connection: close` (one TCP connection per request);
- exec storm: `make -j2` over a generated C project (hundreds of gcc runs), wall time.

For each: the workload ratio (with / without; for exec storm the rate is builds per
second), the ratio to the hook floor (with / floor), each per wall-clock second and per
CPU-second of the workload's own processes (nginx; make and its compilers), the latter
robust to other load on a shared machine; and for the agent rounds the events it
handled per second, its CPU seconds per 1,000 events (and per 1,000 requests), and the
events it lost (must be 0).

The agent runs as deployed: the shipped rules, no enforcement datapath (its own
benchmark), no recording, output to /dev/null.

Run: .venv/bin/python bench/bench_workloads.py [--quick] [--only http|churn|exec] [--rounds N]
     [--hooks syscalls|cgroup] [--fold PERIOD]
(the agent runs with its default sensor.fold_repeats (1s); each hook set is also measured
with `sensor.fold_repeats: 0`, every event sent, or --fold PERIOD; --fold none: not)
(as root; needs nginx-light, wrk and gcc, which scripts/bootstrap.sh installs)
"""
from __future__ import annotations

import argparse
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psutil  # noqa: E402
from hook_floor import load_floor  # noqa: E402

from rules.units import duration_ns  # noqa: E402
from sensor.procfs import process_usage  # noqa: E402

PY = sys.executable
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log crit;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    server {{ listen 127.0.0.1:{port}; root {dir}/www; }}
}}
"""


Rate = tuple[float, float]  # (work per wall-clock second, work per CPU-second of the workload)


@dataclass
class AgentRound:
    """What the agent did during one workload round."""

    events: int
    lost: int
    cpu_s: float
    seconds: float


@dataclass
class AgentRounds:
    """The rounds of one agent configuration: workload rates, what the agent did."""

    rates: list[Rate] = field(default_factory=list)
    rounds: list[AgentRound] = field(default_factory=list)
    work_done: list[float] = field(default_factory=list)  # requests (or builds) per round


@dataclass
class HookSetRounds:
    """One network hook set's rounds: its floor, the agent on it as deployed (and, with
    --fold, the agent with that fold period), what the agent did."""

    floor: list[Rate] = field(default_factory=list)
    agent: AgentRounds = field(default_factory=AgentRounds)
    folded: AgentRounds = field(default_factory=AgentRounds)


@dataclass
class Workload:
    """Rates (work per second) of each condition, one entry per round."""

    name: str
    unit: str
    without: list[Rate] = field(default_factory=list)
    hook_sets: dict[str, HookSetRounds] = field(default_factory=dict)
    fold: str = ""   # how the variant agent's rounds are named (--fold)


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its direct children (nginx master and workers)."""
    pids = [pid, *(c.pid for c in psutil.Process(pid).children())]
    return sum(process_usage(p).cpu_s for p in pids)


@contextmanager
def nginx(workdir: Path) -> Iterator[tuple[int, int]]:
    """(port, pid) of an nginx on a free loopback port serving /small (612 bytes), pinned
    to CPU 0."""
    (workdir / "www").mkdir(parents=True, exist_ok=True)
    (workdir / "www" / "small").write_bytes(b"x" * 612)
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port))
    proc = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", str(conf), "-p", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wrk_rate(port: int, nginx_pid: int, seconds: float, close: bool) -> Rate:
    """Requests per wall-clock second wrk (pinned to CPU 1) achieved against nginx, and per
    CPU-second nginx spent serving them."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{seconds:g}s"]
    if close:
        cmd += ["-H", "Connection: close"]
    cpu0 = _tree_cpu_seconds(nginx_pid)
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}/small"], capture_output=True,
                         text=True, check=True).stdout
    cpu = _tree_cpu_seconds(nginx_pid) - cpu0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not m or not total:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(m.group(1)), int(total.group(1)) / max(cpu, 1e-9)


def make_project(workdir: Path, files: int) -> Path:
    """A C project of `files` small translation units and a Makefile linking them."""
    proj = workdir / "proj"
    proj.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (proj / f"u{i}.c").write_text(
            f"#include <string.h>\nint f{i}(const char *s) {{ return (int)strlen(s) + {i}; }}\n")
    calls = " + ".join(f"f{i}(\"x\")" for i in range(files))
    protos = "".join(f"int f{i}(const char *);\n" for i in range(files))
    (proj / "main.c").write_text(f"{protos}int main(void) {{ return ({calls}) == 0; }}\n")
    objs = " ".join(f"u{i}.o" for i in range(files))
    (proj / "Makefile").write_text(
        f"all: prog\nprog: main.o {objs}\n\tcc -o $@ $^\n%.o: %.c\n\tcc -O0 -c -o $@ $<\n"
        "clean:\n\trm -f *.o prog\n")
    return proj


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build_rate(proj: Path) -> Rate:
    """Builds per wall-clock second and per CPU-second of `make -j2` from clean (one build;
    the CPU of make and every compiler it ran)."""
    subprocess.run(["make", "-s", "-C", str(proj), "clean"], check=True)
    cpu0, started = _children_cpu(), time.perf_counter()
    subprocess.run(["make", "-s", "-j2", "-C", str(proj)], check=True,
                   stdout=subprocess.DEVNULL)
    return 1.0 / (time.perf_counter() - started), 1.0 / (_children_cpu() - cpu0)


class Agent:
    """`netvigil run` as deployed (shipped rules, no enforcement, no recording) on one
    network hook set (`sensor.hooks`, through a config file of its own)."""

    def __init__(self, hooks: str, workdir: Path, fold: str | None = None) -> None:
        """`fold`: sensor.fold_repeats (None: the agent's default)."""
        self.proc: subprocess.Popen[str] | None = None
        self.config = workdir / f"netvigil-{hooks}{'' if fold is None else '-fold'}.yaml"
        self.config.write_text(f"sensor:\n  hooks: {hooks}\n"
                               + ("" if fold is None else f"  fold_repeats: {fold}\n"))

    def __enter__(self) -> Agent:
        self.proc = subprocess.Popen(
            [PY, "-m", "sensor.cli", "run", "--config", str(self.config), "--json", "--no-record",
             "--no-enforce"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # wait until the programs are attached
            if "sensor running" in line:
                return self
        raise RuntimeError(f"agent did not start (exit {self.proc.wait()})")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return process_usage(self.proc.pid).cpu_s

    def stop(self) -> tuple[int, int]:
        """Stop the agent; (events, lost) from its closing status line."""
        assert self.proc is not None and self.proc.stderr is not None
        self.proc.send_signal(signal.SIGINT)
        rest = self.proc.stderr.read()
        self.proc.wait(timeout=30)
        m = re.search(r"events=(\d+) lost=(\d+)", rest)
        if not m:
            raise RuntimeError(f"agent printed no closing status:\n{rest[-2000:]}")
        return int(m.group(1)), int(m.group(2))

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def measure(work: Workload, rounds: int, hook_sets: list[str], workdir: Path, once: Callable[[], Rate],
            amount: Callable[[float], float], fold: str | None = None) -> None:
    """Interleaved rounds: without, then per hook set its floor and the agent on it (and
    with `fold`, the agent with sensor.fold_repeats: FOLD). `once()` returns a Rate;
    `amount(wall rate)` turns it into the work done in the round (per-1,000 figures)."""
    def without() -> None:
        work.without.append(once())

    def floor_of(hooks: str) -> None:
        floor = load_floor(hooks)
        try:
            work.hook_sets[hooks].floor.append(once())
        finally:
            floor.cleanup()

    def agent_on(hooks: str, folding: str | None = None) -> None:
        done = work.hook_sets[hooks].agent if folding is None else work.hook_sets[hooks].folded
        with Agent(hooks, workdir, folding) as agent:
            cpu0, t0 = agent.cpu_seconds(), time.perf_counter()
            rate = once()
            cpu1, t1 = agent.cpu_seconds(), time.perf_counter()
            events, lost = agent.stop()
        done.rates.append(rate)
        done.rounds.append(AgentRound(events, lost, cpu1 - cpu0, t1 - t0))
        done.work_done.append(amount(rate[0]))

    for hooks in hook_sets:
        work.hook_sets.setdefault(hooks, HookSetRounds())
    steps: list[Callable[[], None]] = [without]
    for hooks in hook_sets:
        steps += [lambda h=hooks: floor_of(h), lambda h=hooks: agent_on(h)]
        if fold is not None:
            steps.append(lambda h=hooks: agent_on(h, fold))
    for i in range(rounds):
        # the VM's speed drifts for seconds at a time: every other round runs backwards,
        # and the figures are medians of each round's own ratios
        for step in (steps if i % 2 == 0 else steps[::-1]):
            step()


def report(work: Workload) -> None:
    """Print one workload's figures, per hook set."""
    med = statistics.median
    without = med(r[0] for r in work.without)
    fmt = "{:,.1f}" if without >= 100 else "{:.3f}"
    print(f"{work.name}: {fmt.format(without)} {work.unit} without ({len(work.without)} rounds, medians)")
    def ratio(a: list[Rate], b: list[Rate], part: int) -> float:
        """The median over rounds of each round's a / b."""
        return med(x[part] / y[part] for x, y in zip(a, b))

    def agent_lines(agent: AgentRounds, floor: list[Rate], indent: str) -> None:
        events = med(r.events / r.seconds for r in agent.rounds)
        cpu_per_k = med(1000 * r.cpu_s / max(r.events, 1) for r in agent.rounds)
        cpu_per_k_work = med(1000 * r.cpu_s / max(w, 1) for r, w in zip(agent.rounds, agent.work_done))
        lost = sum(r.lost for r in agent.rounds)
        for label, part in (("per wall-clock second", 0), ("per CPU-second of the workload", 1)):
            print(f"{indent}{label}: with / without {ratio(agent.rates, work.without, part):.3f};"
                  f" with / floor {ratio(agent.rates, floor, part):.3f};"
                  f" floor / without {ratio(floor, work.without, part):.3f}")
        per_request = (f" {cpu_per_k_work:.4f} CPU s per 1,000 requests,"
                       if work.unit == "requests/s" else "")
        print(f"{indent}agent: {events:,.0f} events/s handled, {cpu_per_k:.4f} CPU s per 1,000 events,"
              f"{per_request} lost {lost}")

    for hooks, done in work.hook_sets.items():
        floor, agent = (med(r[0] for r in rates) for rates in (done.floor, done.agent.rates))
        print(f"  sensor.hooks {hooks}: {fmt.format(floor)} hook floor, {fmt.format(agent)} with agent"
              " (ratios: medians of each round's)")
        agent_lines(done.agent, done.floor, "    ")
        if done.folded.rates:
            folded = med(r[0] for r in done.folded.rates)
            print(f"    with {work.fold}: {fmt.format(folded)}")
            agent_lines(done.folded, done.floor, "      ")


PARTS = ("http", "churn", "exec")
HOOK_SETS = ("syscalls", "cgroup")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (smoke test of the benchmark)")
    ap.add_argument("--only", choices=PARTS, action="append", help="run only this workload (repeatable)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per workload (default 5, quick 1)")
    ap.add_argument("--hooks", choices=HOOK_SETS, action="append",
                    help="network hook set to measure (repeatable; default: syscalls and cgroup)")
    ap.add_argument("--fold", metavar="PERIOD", default="0",
                    help="also measure the agent with sensor.fold_repeats: PERIOD (default 0: every "
                         "event sent, against the agent's default 1s; none: not)")
    args = ap.parse_args()
    if args.fold == "none":
        args.fold, variant = None, ""
    else:   # a bad period stops here, not in a round
        every = "" if duration_ns(args.fold, allow_zero=True) else " (every event sent)"
        variant = f"sensor.fold_repeats {args.fold}{every}"
    missing = [tool for tool in ("nginx", "wrk", "cc", "make", "taskset") if not shutil.which(tool)]
    if missing:
        sys.exit(f"bench_workloads: missing {', '.join(missing)} (run scripts/bootstrap.sh)")
    parts = args.only or list(PARTS)
    hook_sets = args.hooks or list(HOOK_SETS)
    rounds = args.rounds or (1 if args.quick else 5)
    seconds = 2.0 if args.quick else 5.0
    files = 60 if args.quick else 300
    print("netvigil workload benchmark" + (" (quick)" if args.quick else ""))
    with tempfile.TemporaryDirectory(prefix="nv-bench-") as tmp:
        workdir = Path(tmp)
        if "http" in parts or "churn" in parts:
            with nginx(workdir) as (port, pid):
                for name, close in (("http", False), ("churn", True)):
                    if name not in parts:
                        continue
                    label = "keep-alive HTTP" if not close else "connection churn (Connection: close)"
                    work = Workload(label, "requests/s", fold=variant)
                    measure(work, rounds, hook_sets, workdir, lambda c=close: wrk_rate(port, pid, seconds, c),
                            lambda rate: rate * seconds, args.fold)
                    report(work)
        if "exec" in parts:
            proj = make_project(workdir, files)
            build_rate(proj)  # warm the page cache
            work = Workload(f"exec storm (make -j2, {files} files)", "builds/s", fold=variant)
            measure(work, rounds, hook_sets, workdir, lambda: build_rate(proj), lambda _rate: 1.0, args.fold)
            report(work)


if __name__ == "__main__":
    main()
