"""Recording and replay figures: bytes per event, recorder rate, replay rate.

Usage: bench/bench_recording.py [--quick] [--events N]

Workload: sensor.recording.synthetic.SyntheticNode, a Kubernetes-node-like mix (accept
28%, connect 30% + 4% egress, UDP sendto 21%, short-lived health checks: clone 7%,
execve 7%, procexit 3%; a few suspicious events), every event carrying its full process
fields as the live sensor emits them. Prints figures; never passes or fails on time.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts.model import Alert  # noqa: E402
from rules.loader import load_rules  # noqa: E402
from sensor.recording import Recorder  # noqa: E402
from sensor.recording.format import list_segments  # noqa: E402
from sensor.recording.synthetic import SyntheticNode  # noqa: E402
from sensor.replay.engine import Replayer, unwatched_types  # noqa: E402
from rules import DEFAULT_RULES_DIR  # noqa: E402

RULES = DEFAULT_RULES_DIR


def bench_record(directory: Path, items: list, n_events: int) -> None:
    rec = Recorder(directory, host="bench", boot_id="b", version="bench")
    process, event = rec.process, rec.event
    t0 = time.perf_counter()
    c0 = time.process_time()
    s0 = time.thread_time()
    for kind, x in items:
        if kind == "event":
            event(x)
        else:
            process(x)
    s1 = time.thread_time()
    t1 = time.perf_counter()
    rec.close()
    t2 = time.perf_counter()
    c2 = time.process_time()
    size = sum(p.stat().st_size for _, p in list_segments(directory))
    n_proc = sum(1 for k, _ in items if k == "process")
    print(f"record: {n_events:,} events + {n_proc:,} process records -> {size:,} bytes in "
          f"{len(list_segments(directory))} segment(s)")
    print(f"  bytes per event (all records, tables, chain, footers): {size / n_events:.1f} B")
    print(f"  hot path: CPU of the sensor's (calling) thread: "
          f"{(s1 - s0) / n_events * 1e6:.2f} us/event; its wall time incl. waiting for "
          f"the GIL while the writer thread encodes: {(t1 - t0) / n_events * 1e6:.2f} us/event")
    print(f"  sustained incl. writing, tagging, hashing: {n_events / (t2 - t0):,.0f} events/s "
          f"wall, {n_events / (c2 - c0):,.0f} events/s per CPU second")


def bench_record_paced(directory: Path, items: list, rate: int) -> None:
    """The sensor's thread at a steady event rate (as a node produces them), not a flood:
    the CPU that recording takes from that thread per event."""
    rec = Recorder(directory, host="bench", boot_id="b", version="bench")
    process, event = rec.process, rec.event
    n_events = sum(1 for k, _ in items if k == "event")
    chunk = max(1, rate // 100)  # 10 ms worth of events at a time
    start = time.perf_counter()
    busy = 0.0
    sent = 0
    for i in range(0, len(items), chunk):
        s0 = time.thread_time()
        for kind, x in items[i:i + chunk]:
            if kind == "event":
                event(x)
                sent += 1
            else:
                process(x)
        busy += time.thread_time() - s0
        delay = start + sent / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    rec.close()
    st = rec.stats()
    print(f"  at a steady {rate:,} events/s: CPU of the sensor's thread "
          f"{busy / n_events * 1e6:.2f} us/event (writer backlog encoded by the caller "
          f"{st['inbox_full']} time(s))")


def bench_replay(directory: Path, n_events: int) -> None:
    gc.disable()
    try:
        r = Replayer([directory])
        t0, c0 = time.perf_counter(), time.process_time()
        n = sum(1 for _ in r.events())
        t1, c1 = time.perf_counter(), time.process_time()
        print(f"replay: read + verify + decode + hydrate {n:,} events: "
              f"{n / (t1 - t0):,.0f} events/s wall, {n / (c1 - c0):,.0f} per CPU second")
        ruleset = load_rules([RULES])
        for label, skip, pre in (
                ("every event built and evaluated", None, None),
                ("as `netvigil replay` runs (events no rule can match counted, not rebuilt)",
                 unwatched_types(ruleset), ruleset)):
            r = Replayer([directory], skip_event_type=skip, prefilter=pre)
            alerts = 0
            evaluate = ruleset.evaluate
            t0, c0 = time.perf_counter(), time.process_time()
            for ev in r.events():
                for m in evaluate(ev):
                    Alert.from_match(m, r.host)
                    alerts += 1
            t1, c1 = time.perf_counter(), time.process_time()
            print(f"replay through the shipped rules ({len(ruleset)} rules), {label}: "
                  f"{alerts} alerts, {n / (t1 - t0):,.0f} events/s wall, "
                  f"{n / (c1 - c0):,.0f} per CPU second"
                  + (f" ({r.stats['events_selected']:,} rebuilt)" if pre else ""))
    finally:
        gc.enable()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (20,000 events)")
    ap.add_argument("--events", type=int, default=None, help="number of events")
    args = ap.parse_args()
    n = args.events or (20_000 if args.quick else 300_000)
    items = list(SyntheticNode(seed=42, suspicious_every=2000).stream(n))
    n_events = sum(1 for k, _ in items if k == "event")
    # the pre-generated workload is millions of live objects a real sensor never holds:
    # keep them out of the cyclic GC's way so it does not distort the recorder's figures
    gc.freeze()
    print(f"bench_recording: {n_events:,} synthetic events (pid {os.getpid()})")
    with tempfile.TemporaryDirectory(prefix="nv-bench-rec-") as tmp:
        directory = Path(tmp)
        bench_record(directory, items, n_events)
        paced = items[:len(items) // 3 if not args.quick else len(items)]
        with tempfile.TemporaryDirectory(prefix="nv-bench-rec-paced-") as tmp2:
            bench_record_paced(Path(tmp2), paced, 50_000)
        del items
        bench_replay(directory, n_events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
