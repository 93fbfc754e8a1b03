"""Sensor benchmark: figures a user cares about, each against a baseline from the same run.

- workload overhead: connect/accept/close loop rate on loopback with the sensor running,
  over the rate without it (target >= 0.97);
- pipeline capacity: events/s decoded, enriched and handed to a consumer, draining a
  pre-filled ring buffer with zero lost, over the drain limit (same records, a callback
  that does nothing) (targets: >= 150,000 events/s and >= 0.4 of the drain limit);
- agent memory (RSS steady, and peak during start) and time from start to first event
  of `netvigil run` (targets: steady <= 150 MB, start <= 5 s).

Run: .venv/bin/python bench/bench_sensor.py [--quick]   (as root)
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sensor.agent import Sensor, SensorOptions  # noqa: E402
from sensor.bpf_program import bpf_source_dir, load_bcc  # noqa: E402

PY = sys.executable

LOOP = """
import socket, sys, time
srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(128)
addr = srv.getsockname(); n = 0; end = time.perf_counter() + float(sys.argv[1])
while time.perf_counter() < end:
    for _ in range(200):
        c = socket.create_connection(addr); s, _ = srv.accept(); s.close(); c.close()
    n += 200
print(n / float(sys.argv[1]))
"""

BURST = """
import socket, sys
n = int(sys.argv[1]); u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    u.connect(('127.0.0.1', 1024 + i % 60000))
"""


def loop_rate(seconds: float) -> float:
    out = subprocess.run([PY, "-c", LOOP, str(seconds)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def workload_overhead(seconds: float, rounds: int) -> tuple[float, float, float]:
    """(rate without, rate with, ratio): alternating rounds, medians. The sensor is
    detached (not merely idle) for the rounds without it."""
    without, with_sensor = [], []
    for _ in range(rounds):
        without.append(loop_rate(seconds))
        sensor = Sensor(lambda _e: None)
        sensor.start()
        stop = threading.Event()

        def pump(s: Sensor = sensor) -> None:
            while not stop.is_set():
                s.poll(50)

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        with_sensor.append(loop_rate(seconds))
        stop.set()
        t.join()
        lost = sensor.stats().lost
        sensor.close()
        if lost:
            print(f"  (lost {lost} events during the loop)")
    base, sensed = statistics.median(without), statistics.median(with_sensor)
    return base, sensed, sensed / base


def _burst(count: int) -> None:
    subprocess.run([PY, "-c", BURST, str(count)], check=True)


def pipeline_capacity(count: int) -> tuple[float, float, int, int]:
    """(events/s through decode+enrich+consumer, drain-limit events/s, lost, delivered)."""
    pages = 1 << max(10, (count * 128 // 4096).bit_length())
    received = [0]

    def consumer(ev: dict) -> None:
        received[0] += 1

    sensor = Sensor(consumer, SensorOptions(ringbuf_pages=pages))
    sensor.start()
    sensor.drain()
    received[0] = 0
    _burst(count)
    started = time.perf_counter()
    sensor.drain()
    elapsed = time.perf_counter() - started
    lost = sensor.stats().lost
    full_rate = received[0] / elapsed
    delivered = received[0]
    sensor.close()

    # drain limit: BCC's own ring-buffer API with a callback that does nothing
    bpf_cls = load_bcc()
    src = bpf_source_dir() / "sensor.c"
    bpf = bpf_cls(src_file=str(src).encode(),
                  cflags=[f"-I{src.parent}", f"-DNV_RINGBUF_PAGES={pages}", "-Wno-macro-redefined"])
    seen = [0]

    def noop(_ctx: object, _data: object, _size: int) -> None:
        seen[0] += 1

    bpf[b"events"].open_ring_buffer(noop)
    bpf.ring_buffer_consume()
    seen[0] = 0
    _burst(count)
    started = time.perf_counter()
    bpf.ring_buffer_consume()
    drain_rate = seen[0] / (time.perf_counter() - started)
    bpf.cleanup()
    return full_rate, drain_rate, lost, delivered


def _rss_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def agent_footprint(duration: float) -> tuple[float, float, float]:
    """(seconds from start to first event, steady RSS MB, peak RSS MB) of `netvigil run`."""
    netvigil = str(Path(PY).with_name("netvigil"))
    started = time.monotonic()
    proc = subprocess.Popen([netvigil, "run", "--events", "--json", "--no-record", "--duration", str(duration)],
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (smoke test of the benchmark)")
    args = ap.parse_args()
    seconds, rounds, burst, footprint = (1.0, 1, 50_000, 6.0) if args.quick else (3.0, 3, 400_000, 12.0)
    print("netvigil sensor benchmark" + (" (quick)" if args.quick else ""))
    base, sensed, ratio = workload_overhead(seconds, rounds)
    print(f"workload overhead: connect/accept/close loop {base:,.0f}/s without, {sensed:,.0f}/s with sensor"
          f" -> ratio {ratio:.3f} (target >= 0.97)")
    full, drain, lost, delivered = pipeline_capacity(burst)
    print(f"pipeline capacity: {full:,.0f} events/s decoded+enriched+consumed ({delivered:,} events, lost {lost});"
          f" drain limit {drain:,.0f} events/s -> ratio {full / drain:.2f}"
          f" (targets >= 150,000/s and >= 0.4)")
    first, steady, peak = agent_footprint(footprint)
    print(f"agent: first event {first:.2f} s after start (target <= 5 s); RSS steady {steady:.0f} MB"
          f" (target <= 150), peak {peak:.0f} MB")


if __name__ == "__main__":
    main()
