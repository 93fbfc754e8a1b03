"""Rule evaluation throughput: the shipped library over a realistic event mix, and how
the cost grows from 10 to 1,000 rules. Prints figures; never passes/fails on time.

    python bench/bench_rules.py [--quick]
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules.loader import load_rules, load_rules_text  # noqa: E402
from rules import DEFAULT_RULES_DIR  # noqa: E402

DEFAULT_RULES = DEFAULT_RULES_DIR
NET_NAMES = ["nginx", "java", "node", "curl", "envoy", "postgres", "redis-server", "kubelet",
             "containerd", "coredns", "ssh", "apt", "pip", "python3"]
NAMES = NET_NAMES + ["sh", "bash", "ls", "cat", "grep", "sed"]
IMAGES = ["docker.io/library/nginx", "ghcr.io/acme/api", "docker.io/library/redis",
          "quay.io/prometheus/node-exporter", ""]


def make_events(n: int, seed: int = 7) -> list[dict]:
    """A mix dominated by connect/accept/execve, like a busy node: few alerts."""
    rnd = random.Random(seed)
    events = []
    for i in range(n):
        r = rnd.random()
        name = rnd.choice(NAMES if 0.65 <= r < 0.85 else NET_NAMES)
        cid = rnd.choice(["host", "3f4e5d6c7b8a", "a1b2c3d4e5f6"])
        base = {"evt.num": i, "evt.time": 1_700_000_000_000_000_000 + i * 1000, "evt.dir": "<",
                "proc.name": name, "proc.exepath": f"/usr/bin/{name}", "proc.pid": 1000 + i % 500,
                "proc.exec_id": f"b-{i % 500}", "proc.pname": "containerd-shim",
                "proc.cmdline": f"{name} --serve", "proc.args": "--serve",
                "user.uid": 0, "user.name": "root", "container.id": cid,
                "container.image.repository": rnd.choice(IMAGES) if cid != "host" else "",
                "k8s.ns.name": "default" if cid != "host" else "", "k8s.pod.labels": {"app": name}}
        if r < 0.40:
            sip = rnd.choice(["10.0.3.7", "10.96.0.1", "93.184.216.34", "140.82.112.3",
                              "127.0.0.1", "172.17.0.2"])
            port = 22 if name == "ssh" else rnd.choice([443, 80, 5432, 6379, 53, 8080, 9090])
            if rnd.random() < 0.005 and cid != "host":  # the odd metadata-service probe
                sip, port = "169.254.169.254", 80
            proto = "udp" if port == 53 else "tcp"
            base.update({"evt.type": "connect", "evt.res": "SUCCESS", "evt.rawres": 0,
                         "fd.type": "ipv4", "fd.typechar": "4", "fd.l4proto": proto,
                         "fd.cip": "10.0.0.5", "fd.cport": 40000 + i % 20000, "fd.sip": sip,
                         "fd.sport": port, "fd.lip": "10.0.0.5", "fd.lport": 40000 + i % 20000,
                         "fd.rip": sip, "fd.rport": port, "fd.num": 5,
                         "fd.name": f"10.0.0.5:{40000 + i % 20000}->{sip}:{port}"})
        elif r < 0.65:
            base.update({"evt.type": "accept4", "evt.res": "SUCCESS", "evt.rawres": 7,
                         "fd.type": "ipv4", "fd.typechar": "4", "fd.l4proto": "tcp",
                         "fd.cip": "10.0.9.9", "fd.cport": 50000, "fd.sip": "10.0.0.5",
                         "fd.sport": 8080, "fd.lip": "10.0.0.5", "fd.lport": 8080,
                         "fd.rip": "10.0.9.9", "fd.rport": 50000, "fd.num": 7})
        elif r < 0.85:
            base.update({"evt.type": "execve", "evt.res": "SUCCESS", "evt.rawres": 0,
                         "proc.aname": ["containerd-shim", "systemd"]})
        elif r < 0.92:
            base.update({"evt.type": "clone", "evt.rawres": 4242})
        elif r < 0.97:
            base.update({"evt.type": "procexit", "evt.arg.status": 0, "evt.arg.sig": 0})
        else:
            if rnd.random() < 0.95:  # an interpreter listening is rare (and alerts)
                base["proc.name"] = rnd.choice(["nginx", "envoy", "java", "redis-server"])
            base.update({"evt.type": "listen", "fd.type": "ipv4", "fd.l4proto": "tcp",
                         "fd.sip": "0.0.0.0", "fd.sport": 8080, "fd.lport": 8080,
                         "fd.lip": "0.0.0.0", "fd.num": 3})
        events.append(base)
    return events


def synthetic_rules(n: int) -> str:
    """``n`` rules spread over event types and distinct process names (few ever match)."""
    types = ["connect", "accept4", "execve", "listen", "sendto", "clone"]
    out = []
    for i in range(n):
        t = types[i % len(types)]
        extra = {"connect": f"fd.sport = {1000 + i}", "accept4": f"fd.lport = {1000 + i}",
                 "execve": f"proc.args contains \"--flag-{i}\"", "listen": f"fd.lport = {i}",
                 "sendto": f"fd.sport = {2000 + i}", "clone": f"evt.rawres = {i}"}[t]
        out.append(f"- rule: synthetic {i}\n  desc: generated\n"
                   f"  condition: evt.type = {t} and proc.name = tool{i} and {extra}\n"
                   f"  output: synthetic {i} %proc.name\n  priority: NOTICE\n")
    return "\n".join(out)


def throughput(ruleset, events: list[dict], seconds: float) -> tuple[float, int]:
    """(events per second, matches) evaluating ``events`` repeatedly for ~``seconds``."""
    evaluate = ruleset.evaluate
    done = matches = 0
    start = time.perf_counter()
    while True:
        for e in events:
            matches += len(evaluate(e))
        done += len(events)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed, matches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (CI smoke)")
    args = ap.parse_args(argv)
    seconds = 0.3 if args.quick else 3.0
    events = make_events(5_000 if args.quick else 50_000)

    t0 = time.perf_counter()
    shipped = load_rules([DEFAULT_RULES])
    load_ms = (time.perf_counter() - t0) * 1000
    rate, _ = throughput(shipped, events, seconds)
    alerting = sum(1 for e in events if shipped.evaluate(e))
    print(f"shipped library: {len(shipped)} rules loaded in {load_ms:.0f} ms")
    print(f"shipped library: {rate:,.0f} events/s on one core "
          f"({1e6 / rate:.2f} us/event; {alerting} of {len(events):,} events alert)")

    costs = {}
    for n in (10, 100, 1000):
        t0 = time.perf_counter()
        rs = load_rules_text(synthetic_rules(n), f"<synthetic {n}>")
        build = time.perf_counter() - t0
        rate_n, _ = throughput(rs, events, seconds)
        costs[n] = 1e6 / rate_n
        print(f"{n:>5} synthetic rules: {rate_n:,.0f} events/s ({costs[n]:.2f} us/event, "
              f"loaded in {build * 1000:.0f} ms)")
    print(f"scaling: 1,000 rules cost {costs[1000] / costs[10]:.2f}x what 10 cost "
          f"(target <= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
