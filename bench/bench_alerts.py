"""Benchmark: alerts/s through the AlertRouter to a loopback HTTP webhook, and the latency
from rule match (submit) to the POST arriving at the receiver (p50/p99).

The receiver runs in its own process (as a real receiver would): a keep-alive HTTP/1.1
server that notes, for every alert, arrival time minus the submit time carried in the
alert (both CLOCK_REALTIME). Prints figures; never passes or fails on time.

    .venv/bin/python bench/bench_alerts.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts.config import parse_alerts_config  # noqa: E402
from alerts.model import Alert  # noqa: E402
from alerts.router import AlertRouter  # noqa: E402

RECEIVER = textwrap.dedent("""
    import http.server, json, sys, threading, time
    lat, lock = [], threading.Lock()
    count = [0]
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            now = time.time_ns()
            data = json.loads(body)
            items = data if isinstance(data, list) else [data]
            with lock:
                for a in items:
                    lat.append(now - a["output_fields"]["bench.submit_ns"])
                count[0] += len(items)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def do_GET(self):
            with lock:
                out = json.dumps({"count": count[0], "lat": lat if self.path == "/lat" else []}).encode()
                if self.path == "/reset":
                    lat.clear(); count[0] = 0
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()
""")


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def _alert(i: int) -> Alert:
    return Alert(time_ns=time.time_ns(), rule="Outbound connection to C2", priority="Warning",
                 output=f"Outbound connection (proc=curl dest=203.0.113.7:{i})",
                 output_fields={"proc.name": "curl", "proc.exepath": "/usr/bin/curl", "fd.rport": i,
                                "container.id": "3ad7b26ded6d", "bench.submit_ns": time.time_ns()},
                 hostname="bench", tags=("network",))


def _router(port: int, spool: Path, batch: int, queue_size: int = 100_000) -> AlertRouter:
    cfg = parse_alerts_config({
        "noise": {"aggregate": {"enabled": False}, "rate_limit": {"enabled": False}},
        "sinks": {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{port}/", "batch": batch,
                           "delivery": {"queue_size": queue_size}}}}, "bench")
    router = AlertRouter(cfg, spool)
    router.start()
    return router


def _wait_count(port: int, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while _get(port, "/count")["count"] < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"receiver got only {_get(port, '/count')['count']} of {n}")
        time.sleep(0.005)


def throughput(port: int, spool: Path, n: int, batch: int,
               queue_size: int = 100_000) -> tuple[float, float]:
    """(alerts/s end to end, submit() calls/s) for n alerts submitted at once."""
    _get(port, "/reset")
    router = _router(port, spool, batch, queue_size)
    alerts = [_alert(i) for i in range(n)]
    t0 = time.perf_counter()
    for a in alerts:
        router.submit(a)
    t_submit = time.perf_counter() - t0
    _wait_count(port, n)
    elapsed = time.perf_counter() - t0
    router.stop(5)
    return n / elapsed, n / t_submit


def latency(port: int, spool: Path, n: int, rate: float) -> list[float]:
    """Match -> POST arrival latencies (ms) at a steady `rate` alerts/s."""
    _get(port, "/reset")
    router = _router(port, spool, 1)
    start = time.perf_counter()
    for i in range(n):
        target = start + i / rate
        while (delay := target - time.perf_counter()) > 0:
            time.sleep(min(delay, 0.002))
        router.submit(_alert(i))
    _wait_count(port, n)
    router.stop(5)
    return sorted(x / 1e6 for x in _get(port, "/lat")["lat"])


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run")
    args = ap.parse_args()
    n, m, rate = (3000, 600, 300.0) if args.quick else (20000, 4000, 500.0)
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with tempfile.TemporaryDirectory() as tmp:
            spool = Path(tmp)
            throughput(port, spool / "warm", 200, 1)
            rate1, submit_rate = throughput(port, spool / "t1", n, 1)
            rate50, _ = throughput(port, spool / "t50", n, 50)
            rate_spill, submit_spill = throughput(port, spool / "spill", n, 1, queue_size=1000)
            lat = latency(port, spool / "lat", m, rate)
        print(f"alerts bench ({'quick' if args.quick else 'full'}): webhook on loopback, "
              "receiver in its own process, noise control off")
        print(f"  throughput, one alert per POST (keep-alive): {rate1:9.0f} alerts/s  ({n} alerts)")
        print(f"  throughput, batch: 50 (JSON array per POST): {rate50:9.0f} alerts/s  ({n} alerts)")
        print(f"  submit() on the hot path:                    {submit_rate:9.0f} calls/s")
        print(f"  burst beyond queue_size 1000 (spills to the disk spool, drains in order): "
              f"{rate_spill:.0f} alerts/s end to end, submit() {submit_spill:.0f} calls/s")
        print(f"  match -> POST arrival at {rate:.0f} alerts/s ({m} alerts): "
              f"p50 {pct(lat, 50):.2f} ms  p99 {pct(lat, 99):.2f} ms  max {lat[-1]:.2f} ms  "
              f"mean {statistics.fmean(lat):.2f} ms")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
