"""Event hub benchmark: what the hot path pays for metrics counters, `observe --last`
history and local API readers.

The same pipeline (decoded events through the shipped rules, no sinks) runs over the
same events with: no hub (the baseline), the hub with no reader (what every agent
pays), one reader whose queue is full (a stalled `observe`: every event is a counted
drop), and one reader whose queue is drained by its own thread. Rounds interleave;
medians are printed, with the ratio to the baseline (target >= 0.95 for the hub alone).

Run: .venv/bin/python bench/bench_event_hub.py [--events N] [--rounds R]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_rules import make_events  # noqa: E402
from rules import DEFAULT_RULES_DIR  # noqa: E402
from rules.loader import load_rules  # noqa: E402
from sensor.event_hub import EventHub, Reader  # noqa: E402
from sensor.pipeline import Pipeline  # noqa: E402


def _rate(pipeline: Pipeline, hub: EventHub | None, events: list[dict], turn: int = 1024) -> float:
    """Events/s, with hub.flush() every `turn` events as the poll loop does once per drain."""
    t0 = time.perf_counter()
    for start in range(0, len(events), turn):
        for e in events[start:start + turn]:
            pipeline(e)
        if hub is not None:
            hub.flush()
    return len(events) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    ruleset = load_rules([DEFAULT_RULES_DIR], skip_unsupported=True)
    events = make_events(args.events)

    def variant(name: str) -> tuple[Pipeline, EventHub | None, threading.Event | None]:
        if name == "baseline":
            return Pipeline(hostname="bench", ruleset=ruleset), None, None
        hub = EventHub()
        p = Pipeline(hostname="bench", ruleset=ruleset, on_event=hub.publish, on_alert=hub.alert)
        stop = None
        if name == "stalled reader":
            r = Reader(16)
            hub.attach(r)
            for _ in range(16):
                r.offer("event", {})
        elif name == "draining reader":
            r = Reader(8192)
            hub.attach(r)
            stop = threading.Event()

            def drain() -> None:
                while not stop.is_set():
                    if not r.take():
                        time.sleep(0.05)

            threading.Thread(target=drain, daemon=True).start()
        return p, hub, stop

    names = ("baseline", "hub, no reader", "stalled reader", "draining reader")
    rates: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            pipeline, hub, stop = variant(name)
            rates[name].append(_rate(pipeline, hub, events))
            if stop is not None:
                stop.set()
    base = statistics.median(rates["baseline"])
    print(f"pipeline over {args.events:,} synthetic events, shipped rules, median of {args.rounds} rounds:")
    for name in names:
        med = statistics.median(rates[name])
        print(f"  {name:<16} {med:>10,.0f} events/s  {1e6 / med:6.2f} us/event  ratio {med / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
