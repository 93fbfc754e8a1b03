"""Sensor benchmark: figures a user cares about, each against a baseline from the same run.

- workload overhead: connect/accept/close loop rate on loopback (pinned to one CPU) in
  interleaved rounds without the sensor, with EMPTY programs on the sensor's hooks (the
  floor: what attaching anything to those hooks costs before our programs do any work),
  with the sensor (the agent's default sensor.fold_repeats) and with --fold SECONDS;
  medians of each round's ratio, per wall-clock second and per CPU-second of the loop
  (the latter is robust to other load on the machine); target: with / floor >= 0.97;
- pipeline capacity: events/s decoded, enriched and handed to a consumer, draining a
  pre-filled ring buffer with zero lost, over the drain limit of BCC's ring buffer in
  Python (same records, a callback that does nothing) (targets: >= 150,000 events/s and
  >= 0.4 of the drain limit); also the no-op drain rate of netvigil's own ring reader,
  the ceiling of the pipeline as built;
- agent memory (RSS steady, and peak during start) and time from start to first event
  of `netvigil run` (targets: steady <= 150 MB, start <= 5 s).

Run: .venv/bin/python bench/bench_sensor.py [--quick] [--only workload|pipeline|agent] [--fold SECONDS] [--rounds N]   (as root)
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sensor.agent import Sensor, SensorOptions  # noqa: E402
from sensor.config import DEFAULT_FOLD_REPEATS_S  # noqa: E402
from sensor.bpf_program import load_bcc, sensor_cflags, sensor_program_text  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from hook_floor import load_floor  # noqa: E402

PY = sys.executable

LOOP = """
import resource, socket, sys, time
srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(128)
addr = srv.getsockname(); n = 0; start = time.perf_counter(); end = start + float(sys.argv[1])
r0 = resource.getrusage(resource.RUSAGE_SELF)
while time.perf_counter() < end:
    for _ in range(200):
        c = socket.create_connection(addr); s, _ = srv.accept(); s.close(); c.close()
    n += 200
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
print(n / (time.perf_counter() - start), n / cpu)
"""

BURST = """
import socket, sys
n = int(sys.argv[1]); u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    u.connect(('127.0.0.1', 1024 + i % 60000))
"""


LOOP_CPU = max(os.sched_getaffinity(0))
"""The loop runs pinned to this CPU (the last one allowed), so every round runs it alike."""
Rate = tuple[float, float]   # (iterations per wall-clock second, per CPU-second of the loop)


def loop_rate(seconds: float) -> Rate:
    """(iterations per wall-clock second, iterations per CPU-second of the loop process)."""
    out = subprocess.run([PY, "-c", LOOP, str(seconds)], capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {LOOP_CPU}))
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


@contextmanager
def floor_loaded() -> Iterator[None]:
    """Empty programs on every hook the sensor uses (bench/hook_floor.py), detached after."""
    floor = load_floor()
    try:
        yield
    finally:
        floor.cleanup()


@contextmanager
def sensor_running(fold_s: float) -> Iterator[None]:
    """The sensor (folding repeats every `fold_s`; 0: every event sent), its ring buffer
    drained by a thread as the agent's poll loop does; detached (not merely idle) after."""
    sensor = Sensor(lambda _e: None, SensorOptions(fold_repeats_s=fold_s))
    sensor.start()
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            sensor.poll(50)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        lost = sensor.stats().lost
        sensor.close()
        if lost:
            print(f"  (lost {lost} events during the loop)")


def workload_rounds(seconds: float, rounds: int, variant_fold: float | None) -> dict[str, list[Rate]]:
    """The loop's rates per condition, one per round: without, the hook floor, the sensor
    with the agent's default sensor.fold_repeats and (unless None) with `variant_fold`;
    interleaved, every other round in reverse order (this VM's speed drifts)."""
    conditions: dict[str, Callable[[], AbstractContextManager[None]]] = {
        "without": nullcontext, "floor": floor_loaded,
        "sensor": lambda: sensor_running(DEFAULT_FOLD_REPEATS_S)}
    if variant_fold is not None:
        conditions["variant"] = lambda: sensor_running(variant_fold)
    rates: dict[str, list[Rate]] = {name: [] for name in conditions}
    for i in range(rounds):
        for name in (list(conditions) if i % 2 == 0 else list(conditions)[::-1]):
            with conditions[name]():
                rates[name].append(loop_rate(seconds))
    return rates


def round_ratio(a: list[Rate], b: list[Rate], part: int) -> float:
    """The median over rounds of each round's a / b (part 0: wall-clock, 1: CPU-second)."""
    return statistics.median(x[part] / y[part] for x, y in zip(a, b))


def _burst(count: int) -> None:
    subprocess.run([PY, "-c", BURST, str(count)], check=True)


@dataclass
class Capacity:
    """Pipeline capacity figures (events/s are medians over the rounds)."""

    full: float          # decoded, enriched and handed to a consumer (the real sensor)
    reader_noop: float   # netvigil's ring reader, a decode that does nothing
    bcc_noop: float      # BCC's ring_buffer_consume, a callback that does nothing
    delivered: int       # events the consumer received in the last round
    lost: int            # events the kernel could not queue, all rounds


def _timed(drain: Callable[[], object], counter: list[int]) -> float:
    counter[0] = 0
    started = time.perf_counter()
    drain()
    return counter[0] / (time.perf_counter() - started)


def pipeline_capacity(count: int, rounds: int) -> Capacity:
    """Drain a ring buffer pre-filled by a burst of `count` UDP connects, three ways.

    The sensor and a second copy of the programs read by BCC are loaded together, so
    each burst fills both ring buffers with the same records; the drains alternate.
    """
    pages = 1 << max(10, (count * 128 // 4096).bit_length())
    received = [0]

    def consumer(_ev: dict) -> None:
        received[0] += 1

    def nothing(_buf: object, _off: int, _length: int) -> None:
        received[0] += 1

    sensor = Sensor(consumer, SensorOptions(ringbuf_pages=pages))
    sensor.start()
    assert sensor.program is not None
    bpf_cls = load_bcc()
    bpf = bpf_cls(text=sensor_program_text(offsets=sensor.program.offsets).encode(),
                  cflags=sensor_cflags(pages, use_btf=sensor.program.uses_btf,
                                       offsets=sensor.program.offsets))
    seen = [0]

    def noop(_ctx: object, _data: object, _size: int) -> None:
        seen[0] += 1

    bpf[b"events"].open_ring_buffer(noop)
    full, mine, theirs = [], [], []
    delivered = 0
    try:
        for _ in range(rounds):
            sensor.drain()
            bpf.ring_buffer_consume()
            _burst(count)
            full.append(_timed(sensor.drain, received))
            delivered = received[0]
            theirs.append(_timed(bpf.ring_buffer_consume, seen))
            sensor.program.set_sink(nothing, consumer)
            _burst(count)
            mine.append(_timed(sensor.drain, received))
            theirs.append(_timed(bpf.ring_buffer_consume, seen))
            sensor.program.set_sink(sensor.decoder.decode_at, consumer)
        lost = sensor.stats().lost
    finally:
        sensor.close()
        bpf.cleanup()
    med = statistics.median
    return Capacity(med(full), med(mine), med(theirs), delivered, lost)


def _rss_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def agent_footprint(duration: float) -> tuple[float, float, float]:
    """(seconds from start to first event, steady RSS MB, peak RSS MB) of `netvigil run`
    with the shipped rules. Enforcement is off: it has its own benchmark, and the agent
    would otherwise leave its datapath attached to the root cgroup (enforce.persist)."""
    netvigil = str(Path(PY).with_name("netvigil"))
    started = time.monotonic()
    proc = subprocess.Popen([netvigil, "run", "--events", "--json", "--no-record", "--no-enforce",
                             "--duration", str(duration)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stop = threading.Event()

    def activity() -> None:
        while not stop.is_set():
            subprocess.run(["true"])
            time.sleep(0.05)

    t = threading.Thread(target=activity, daemon=True)
    t.start()
    first = None
    samples = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if first is None and line.startswith("{"):
            first = time.monotonic() - started
        if time.monotonic() - started > duration * 0.6:
            samples.append(_rss_kb(proc.pid, "VmRSS:"))
            peak = _rss_kb(proc.pid, "VmHWM:")
        if first is not None and samples and time.monotonic() - started > duration * 0.8:
            break
    steady = statistics.median(samples) / 1024 if samples else float("nan")
    peak_mb = peak / 1024 if samples else float("nan")
    proc.terminate()
    proc.wait(timeout=30)
    stop.set()
    t.join()
    return first or float("nan"), steady, peak_mb


PARTS = ("workload", "pipeline", "agent")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (smoke test of the benchmark)")
    ap.add_argument("--only", choices=PARTS, action="append",
                    help="run only this part (repeatable; default: all)")
    ap.add_argument("--fold", type=float, metavar="SECONDS", default=0.0,
                    help="workload: also measure the sensor with sensor.fold_repeats of SECONDS "
                         "(default 0: every event sent, against the agent's default "
                         f"{DEFAULT_FOLD_REPEATS_S:g}s; -1: not)")
    ap.add_argument("--rounds", type=int, default=7, metavar="N",
                    help="workload: interleaved rounds of each condition (default 7)")
    args = ap.parse_args()
    parts = set(args.only or PARTS)
    seconds, rounds, burst, footprint = (1.0, 1, 50_000, 6.0) if args.quick else (3.0, 3, 400_000, 12.0)
    loop_rounds = 1 if args.quick else args.rounds
    print("netvigil sensor benchmark" + (" (quick)" if args.quick else ""))
    if "workload" in parts:
        rates = workload_rounds(seconds, loop_rounds, args.fold if args.fold >= 0 else None)
        without = statistics.median(w for w, _ in rates["without"])
        print(f"workload overhead: connect/accept/close loop on CPU {LOOP_CPU}, {loop_rounds} interleaved rounds"
              f" of {seconds:g} s, {without:,.0f}/s without; medians of each round's ratio"
              " (wall-clock / per CPU-second of the loop):")
        print(f"  hook floor (empty programs on the sensor's hooks) / without:"
              f" {round_ratio(rates['floor'], rates['without'], 0):.3f} / {round_ratio(rates['floor'], rates['without'], 1):.3f}")
        labels = {"sensor": f"sensor.fold_repeats {DEFAULT_FOLD_REPEATS_S:g}s (the default)",
                  "variant": f"sensor.fold_repeats {args.fold:g}s" + (" (every event sent)" if not args.fold else "")}
        for name in ("sensor", "variant"):
            if name in rates:
                mine = rates[name]
                print(f"  {labels[name]}: with / without {round_ratio(mine, rates['without'], 0):.3f}"
                      f" / {round_ratio(mine, rates['without'], 1):.3f};"
                      f" with / floor {round_ratio(mine, rates['floor'], 0):.3f}"
                      f" / {round_ratio(mine, rates['floor'], 1):.3f} (target >= 0.97)")
    if "pipeline" in parts:
        cap = pipeline_capacity(burst, rounds)
        print(f"pipeline capacity: {cap.full:,.0f} events/s decoded+enriched+consumed"
              f" ({cap.delivered:,} events per round, {rounds} rounds, lost {cap.lost});"
              f" drain limit (BCC ring buffer, no-op callback) {cap.bcc_noop:,.0f} events/s"
              f" -> ratio {cap.full / cap.bcc_noop:.2f} (targets >= 150,000/s and >= 0.4)")
        print(f"  netvigil's own ring reader with a no-op decoder drains {cap.reader_noop:,.0f} events/s"
              f" ({cap.reader_noop / cap.bcc_noop:.1f}x BCC's limit); the full pipeline is"
              f" {cap.full / cap.reader_noop:.2f} of it")
    if "agent" in parts:
        first, steady, peak = agent_footprint(footprint)
        print(f"agent: first event {first:.2f} s after start (target <= 5 s); RSS steady {steady:.0f} MB"
              f" (target <= 150), peak {peak:.0f} MB")


if __name__ == "__main__":
    main()
